"""Beyond the paper: every intervention and probe per recurrent cell (GRU, LSTM, tanh RNN), and
whether each cell shows the onion signature.

The signature, by the same bands the summary applies to the GRU (onion.report.summary): at a size the
paper reports, linear unigram and bigram DAS and the linear probe are *low* (at most the paper's
autoregressive-GRU mean + max(2 s.d., 0.05)) while the onion intervention and the onion probe are
*high* (at least the paper's mean − max(2 s.d., 0.05)). A cell that did not learn the task (base
accuracy below the paper's band) is not judged.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from onion.log import log
from onion.names import INTERVENTION_KINDS, PROBE_KINDS
from onion.report import paper
from onion.report.summary import margin
from onion.report.tables import format_entry, read_metrics, to_latex, to_markdown
# (table, kind, direction) of the signature
SIGNATURE = [("intervention", "linear_unigram", "low"), ("intervention", "linear_bigram", "low"),
             ("probe", "linear", "low"), ("intervention", "onion", "high"), ("probe", "onion", "high")]
PRESENT, ABSENT, NOT_JUDGED = "onion signature present", "onion signature absent", "not judged"


def _with_cell(results: pd.DataFrame) -> pd.DataFrame:
    return results if "cell" in results else results.assign(cell="gru")


def cells_table(base: pd.DataFrame, interventions: pd.DataFrame, probes: pd.DataFrame) -> pd.DataFrame:
    """Tidy: one row per (cell, variant, size, method) with mean, sd, seeds and the per-seed values
    ("seed:value" pairs). method is "base", "intervention <kind>" or "probe <kind>"."""
    parts = [_with_cell(base).assign(method="base")]
    parts += [_with_cell(interventions).assign(method="intervention " + interventions["kind"])]
    parts += [_with_cell(probes).assign(method="probe " + probes["kind"])]
    rows = pd.concat([p[["cell", "variant", "size", "seed", "method", "exact_match"]] for p in parts])
    order = ["base"] + [f"intervention {k}" for k in INTERVENTION_KINDS] + [f"probe {k}" for k in PROBE_KINDS]
    grouped = rows.sort_values("seed").groupby(["cell", "variant", "size", "method"])["exact_match"]
    table = grouped.agg(mean="mean", sd=lambda s: s.std(ddof=1) if len(s) > 1 else float("nan"),
                        seeds="count").reset_index()
    per_seed = rows.sort_values("seed").groupby(["cell", "variant", "size", "method"]).apply(
        lambda g: ", ".join(f"{s}:{v:.3f}" for s, v in zip(g["seed"], g["exact_match"])),
        include_groups=False)
    table = table.merge(per_seed.rename("per_seed").reset_index())
    table["method"] = pd.Categorical(table["method"], categories=order, ordered=True)
    return table.sort_values(["cell", "variant", "method", "size"]).reset_index(drop=True)


def _paper_entry(method: str, variant: str, size: int):
    table, kind = method.split(" ", 1) if " " in method else ("base", method)
    if table == "base":
        return paper.BASE_ACCURACY.get(variant, {}).get(size)
    if table == "intervention":
        return paper.INTERVENTIONS.get(variant, {}).get(kind, {}).get(size)
    return paper.PROBES.get((kind, variant), {}).get(size)


def signature(table: pd.DataFrame) -> list[dict]:
    """Per (cell, variant, size): the verdict and one evidence line per criterion."""
    verdicts = []
    for (cell, variant, size), group in table.groupby(["cell", "variant", "size"]):
        means = dict(zip(group["method"].astype(str), group["mean"]))
        lines, results = [], []
        base_entry = _paper_entry("base", variant, int(size))
        if base_entry is None:
            verdicts.append({"cell": cell, "variant": variant, "size": int(size), "verdict": NOT_JUDGED,
                             "evidence": [f"the paper has no N = {size}"]})
            continue
        base_limit = base_entry[0] - margin(base_entry[1])
        learned = means.get("base", float("nan")) >= base_limit
        lines.append(f"base accuracy {means.get('base', float('nan')):.2f}, needs ≥ {base_limit:.2f} "
                     f"{'✓' if learned else '✗'}")
        for kind_table, kind, direction in SIGNATURE:
            method = f"{kind_table} {kind}"
            entry = _paper_entry(method, variant, int(size))
            if method not in means or entry is None:
                continue
            sign = -1 if direction == "high" else 1
            limit = entry[0] + sign * margin(entry[1])
            ok = means[method] >= limit if direction == "high" else means[method] <= limit
            results.append(ok)
            lines.append(f"{method} {means[method]:.2f}, {direction}: needs {'≥' if direction == 'high' else '≤'} "
                         f"{limit:.2f} {'✓' if ok else '✗'}")
        if not learned:
            verdict = f"{NOT_JUDGED}: the model did not learn the task"
        elif len(results) < len(SIGNATURE):
            verdict = f"{NOT_JUDGED}: {len(SIGNATURE) - len(results)} of the five methods missing"
        else:
            verdict = PRESENT if all(results) else ABSENT
        verdicts.append({"cell": cell, "variant": variant, "size": int(size), "verdict": verdict,
                         "evidence": lines})
    return verdicts


def signature_markdown(verdicts: list[dict]) -> str:
    lines = ["## Beyond the paper: the onion signature per recurrent cell", "",
             f"Criterion: {' '.join(__doc__.split(chr(10) + chr(10))[1].split())}", ""]
    for v in verdicts:
        lines += [f"### {v['cell']}, {v['variant']} N = {v['size']}: **{v['verdict']}**", ""]
        lines += [f"- {e}" for e in v["evidence"]] + [""]
    return "\n".join(lines)


def write_cells_table(table: pd.DataFrame, md, csv, tex) -> None:
    """CSV: the tidy table; Markdown and LaTeX: rows (cell, variant, method), columns N."""
    table.to_csv(csv, index=False, float_format="%.4f")
    formatted = table.assign(value=[format_entry(m, s, k)
                                for m, s, k in zip(table["mean"], table["sd"], table["seeds"])])
    wide = formatted.pivot_table(index=["cell", "variant", "method"], columns="size", values="value",
                             aggfunc="first", observed=True).fillna("")
    wide.columns = [f"N={c}" for c in wide.columns]
    wide = wide.reset_index()
    title = "Every intervention and probe per recurrent cell (exact match, mean ± s.d. over [k] seeds)"
    Path(md).write_text(to_markdown(wide, title, "Per-seed values in the CSV. The state is h (GRU, tanh "
                                    "RNN) or [h; c] (LSTM)."))
    Path(tex).write_text(to_latex(wide, title))


def run_table_cells(metrics, interventions, probes, md, csv, tex, signature_path) -> None:
    """The cells table and the onion-signature verdict per recurrent cell (Markdown)."""
    table = cells_table(read_metrics(metrics), read_metrics(interventions), read_metrics(probes))
    write_cells_table(table, md, csv, tex)
    verdicts = signature(table)
    Path(signature_path).write_text(signature_markdown(verdicts))
    for v in verdicts:
        log(f"{v['cell']} {v['variant']} N={v['size']}: {v['verdict']}")
    log(f"wrote {md}, {csv}, {tex}, {signature_path}")
