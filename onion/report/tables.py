"""Result tables: mean ± s.d. over seeds beside the paper's numbers, as Markdown, CSV and LaTeX.

An entry of a table is one (row, size): "0.97 ± 0.01 (0.97 ± 0.00)", ours then the paper's.
Torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from onion import keys
from onion.log import log
from onion.names import INTERVENTION_KINDS, PROBE_KINDS
from onion.report import paper as reported


def read_metrics(paths) -> pd.DataFrame:
    """One row per metrics JSON file (its top-level scalar fields), with the settings keys of its
    path (onion.keys: `train`, and `settings` for an analysis; "" where the path has none)."""
    rows = []
    for path in paths:
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: unreadable metrics file ({err})") from err
        fields = keys.result_fields(path) or keys.model_fields(path) or {}
        rows.append({k: v for k, v in record.items() if not isinstance(v, (dict, list))}
                    | {"train": fields.get("train", ""), "settings": fields.get("settings", "")})
    return pd.DataFrame(rows)


def with_present(paths, root, analysis: str | None) -> list[Path]:
    """`paths` and, where `root` is given, every result of `analysis` present under it (models'
    metrics.json for None): a table reports every run in the data folder, not only its grid's."""
    present = [] if root is None else \
        keys.present_metrics(root) if analysis is None else keys.present_results(root, analysis)
    return sorted({Path(p) for p in paths} | set(present))


def own_keys(paths) -> set[tuple[str, str]]:
    """The (train, settings) keys of a grid's own result or metrics paths: the settings it runs."""
    fields = (keys.result_fields(p) or keys.model_fields(p) for p in paths)
    return {(f["train"], f.get("settings", "")) for f in fields if f}


def gru_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows the paper's tables are about: GRUs (results without a cell are GRUs); the other
    cells go to the cells table."""
    if "cell" not in results:
        return results
    rows = results[results["cell"].fillna("gru") == "gru"]
    if rows.empty:
        raise ValueError("no GRU results among the inputs: the paper's tables are about GRUs")
    return rows


def summarize(results: pd.DataFrame, row_keys: list[str], value: str, paper: dict,
              own: set[tuple[str, str]] = frozenset()) -> pd.DataFrame:
    """Tidy summary: one line per (row_keys..., size, settings keys) with mean, sd, seeds and the
    paper's cell. Seeds are pooled only where the settings keys (`train`, `settings`) agree; where
    an entry has several, the grid's own keys `own` come first (column `grid`), then the one with
    the most seeds, then the keys in order: the first line is the one the summary judges.

    `paper` maps a row label (a value, or a tuple of values for several row_keys) to {size: (m, sd)}.
    """
    results = results.assign(**{k: results[k] if k in results else "" for k in ("train", "settings")})
    grouped = results.groupby(row_keys + ["size", "train", "settings"])[value]
    table = grouped.agg(mean="mean", sd=lambda s: s.std(ddof=1) if len(s) > 1 else float("nan"),
                        seeds="count").reset_index()
    table["grid"] = [(t, a) in own for t, a in zip(table["train"], table["settings"])]
    table = table.sort_values([*row_keys, "size", "grid", "seeds"],
                              ascending=[True] * (len(row_keys) + 1) + [False, False],
                              kind="stable").reset_index(drop=True)
    label = table[row_keys].apply(lambda r: tuple(r) if len(row_keys) > 1 else r.iloc[0], axis=1)
    entries = [paper.get(lab, {}).get(int(size)) for lab, size in zip(label, table["size"])]
    table["paper_mean"] = [e[0] if e else float("nan") for e in entries]
    table["paper_sd"] = [e[1] if e else float("nan") for e in entries]
    return table


def format_entry(mean, sd, seeds) -> str:
    """'0.81 ± 0.09 [5]': our mean ± s.d. over seeds, the seed count in square brackets."""
    return f"{mean:.2f}" + (f" ± {sd:.2f}" if seeds > 1 and sd == sd else "") + f" [{seeds}]"


def _paper_entry(mean, sd) -> str:
    if mean != mean:
        return "–"
    return f"{mean:.2f}" + (f" ± {sd:.2f}" if sd == sd else "")  # the paper gives some without s.d.


def wide(summary: pd.DataFrame, row_keys: list[str]) -> pd.DataFrame:
    """Rows = row_keys, columns = sizes, entries 'ours [seeds] (paper)'. Where an entry has results of
    several settings, a `settings` column tells the rows apart (the keys of onion.keys)."""
    summary = summary.assign(entry=[
        f"{format_entry(m, s, k)} ({_paper_entry(pm, ps)})" for m, s, k, pm, ps in
        zip(summary["mean"], summary["sd"], summary["seeds"], summary["paper_mean"], summary["paper_sd"])])
    if summary.duplicated([*row_keys, "size"]).any():
        summary = summary.assign(settings=[f"train {t}" + (f", {a}" if a else "") + (" (this grid)" if g else "")
                                           for t, a, g in zip(summary["train"], summary["settings"], summary["grid"])])
        row_keys = [*row_keys, "settings"]
    table = summary.pivot(index=row_keys, columns="size", values="entry").fillna("")
    table.columns = [f"N={c}" for c in table.columns]
    return table.reset_index()


BESIDE_PAPER = ("Cells: ours, mean ± s.d. over [the number of] seeds, pooled over every result in data/ "
                "with the same settings (the paper's mean ± s.d. over 5 seeds in round brackets).")


def to_markdown(table: pd.DataFrame, title: str, note: str = BESIDE_PAPER) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([f"# {title}", "", header, rule, *body]) + "\n\n" + note + "\n"


def to_latex(table: pd.DataFrame, title: str) -> str:
    def esc(text):
        return str(text).replace("_", r"\_").replace("±", r"$\pm$")
    lines = [r"\begin{table}[t]", r"\centering", r"\caption{" + esc(title) + "}",
             r"\begin{tabular}{" + "l" * (table.shape[1]) + "}", r"\toprule",
             " & ".join(esc(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(summary: pd.DataFrame, row_keys: list[str], title: str, md, csv, tex) -> None:
    """Write the tidy summary as CSV and the wide 'ours [seeds] (paper)' view as Markdown and LaTeX."""
    summary.to_csv(csv, index=False, float_format="%.4f")
    table = wide(summary, row_keys)
    Path(md).write_text(to_markdown(table, title))
    Path(tex).write_text(to_latex(table, title))


def run_table_base(metrics, md, csv, tex, root=None) -> None:
    """Tables 1 and 3 from the models' metrics.json files (and every model under `root`)."""
    results = gru_rows(read_metrics(with_present(metrics, root, None)))
    summary = summarize(results, ["variant"], "exact_match", reported.BASE_ACCURACY, own_keys(metrics))
    write_table(summary, ["variant"], "Tables 1 and 3: exact-match accuracy of the trained GRUs",
                md, csv, tex)
    log(f"wrote {md}, {csv}, {tex} from {len(results)} models")


def _run_settings(results: pd.DataFrame, columns: dict) -> pd.DataFrame:
    """The distinct training settings of the results, for a table's title (missing columns of
    older files take `columns`' defaults)."""
    results = results.assign(**{c: d for c, d in columns.items() if c not in results})
    return results[["steps", *columns]].drop_duplicates().sort_values(["steps", "lr"])


def run_table_interventions(results, md, csv, tex, root=None) -> None:
    """Tables 2 (autoregressive) and 5 (no input) from intervention result JSON files (and every
    one under `root`)."""
    rows_read = gru_rows(read_metrics(with_present(results, root, "intervention")))
    rows = {(variant, kind): entries for variant, kinds in reported.INTERVENTIONS.items()
            for kind, entries in kinds.items()}
    rows[("autoregressive", "onion_control")] = {64: (reported.ONION_CONTROL_N64_AR, float("nan"))}
    summary = summarize(rows_read, ["variant", "kind"], "exact_match", rows, own_keys(results))
    summary["kind"] = pd.Categorical(summary["kind"], categories=INTERVENTION_KINDS, ordered=True)
    summary = summary.sort_values(["variant", "kind", "size"], kind="stable")
    runs = _run_settings(rows_read, {"lr": float("nan")})
    steps = ", ".join(f"{s} steps at lr {lr:g}" for s, lr in runs.itertuples(index=False))
    write_table(summary, ["variant", "kind"], "Tables 2 (autoregressive) and 5 (no input): exact match "
                f"of interventions on the final state ({steps}; the paper: 60000 steps at lr 0.001)",
                md, csv, tex)
    log(f"wrote {md}, {csv}, {tex} from {len(rows_read)} interventions")


def run_table_probes(results, md, csv, tex, root=None) -> None:
    """Table 4 from probe result JSON files (and every one under `root`)."""
    rows_read = gru_rows(read_metrics(with_present(results, root, "probe")))
    summary = summarize(rows_read, ["kind", "variant"], "exact_match", reported.PROBES, own_keys(results))
    summary["kind"] = pd.Categorical(summary["kind"], categories=PROBE_KINDS, ordered=True)
    summary = summary.sort_values(["kind", "variant", "size"], kind="stable")
    runs = _run_settings(rows_read, {"lr": float("nan"), "lr_schedule": "constant"})
    settings = ", ".join(f"{s} steps, " + (f"cosine lr from {lr:g}" if sched == "cosine" else f"{sched} lr {lr:g}")
                         for s, lr, sched in runs.itertuples(index=False))
    write_table(summary, ["kind", "variant"], "Table 4: exact match of probes on the final state "
                f"({settings}; the paper: 60000 steps, constant lr 0.001)", md, csv, tex)
    log(f"wrote {md}, {csv}, {tex} from {len(rows_read)} probes")
