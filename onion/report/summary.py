"""A one-page summary: which of the paper's claims (PAPER.md §9) this run reproduced.

Every criterion is derived from the paper's own numbers, never from ours: an entry the paper reports
as low must have our mean at most the paper's mean + max(2 s.d., 0.05), an entry it reports as high
at least the paper's mean − max(2 s.d., 0.05). The criteria are written on the page next to our
numbers. A claim whose sizes or variants are missing from the grid is reported as not testable.
"""

from __future__ import annotations

import pandas as pd

from onion.report import paper

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "NOT reproduced", "not testable here"
PARTLY = "consistent so far, not fully testable here"
SMALL = (48, 64)
CONTROL_LIMIT = paper.ONION_CONTROL_N64_AR + 0.05  # the paper gives ≈ 0.21 (N = 64) without s.d.


def margin(paper_sd: float) -> float:
    """How far our mean may sit on the wrong side of the paper's: 2 s.d., at least 0.05."""
    return max(2 * paper_sd, 0.05) if paper_sd == paper_sd else 0.05


def _row(table: pd.DataFrame, **keys) -> pd.Series | None:
    rows = table
    for key, value in keys.items():
        rows = rows[rows[key] == value]
    return None if rows.empty else rows.iloc[0]


def _fmt(row) -> str:
    seeds = int(row["seeds"])
    sd = f" ± {row['sd']:.2f}" if seeds > 1 and row["sd"] == row["sd"] else ""
    return f"{row['mean']:.2f}{sd} ({seeds} seed{'s' if seeds > 1 else ''})"


def check_entry(row, direction: str, limit: float | None = None) -> tuple[bool | None, str]:
    """(passes, evidence) for one table row (one entry of a table); `direction` is 'high' or 'low'.
    The limit comes from the row's paper entry unless given; (None, ...) when the paper has no number for it."""
    if limit is None:
        if row["paper_mean"] != row["paper_mean"]:
            return None, f"{_fmt(row)}; not in the paper"
        sign = -1 if direction == "high" else 1
        limit = row["paper_mean"] + sign * margin(row["paper_sd"])
    ok = row["mean"] >= limit if direction == "high" else row["mean"] <= limit
    bound = "≥" if direction == "high" else "≤"
    return bool(ok), f"{_fmt(row)}, needs {bound} {limit:.2f} {'✓' if ok else '✗'}"


def _checks(table: pd.DataFrame, entries: list[tuple[str, str, int, str]], labels: dict,
            limits: dict | None = None) -> tuple[str, list[str]]:
    """Verdict over (variant, kind, size, direction) entries; entries the grid lacks are skipped."""
    lines, results = [], []
    for variant, kind, size, direction in entries:
        row = _row(table, variant=variant, kind=kind, size=size)
        if row is None:
            continue
        ok, evidence = check_entry(row, direction, (limits or {}).get(kind))
        lines.append(f"{labels.get(kind, kind)} {variant} N={size}: {evidence}")
        if ok is not None:
            results.append(ok)
    if not results:
        return NOT_TESTABLE, lines or ["the grid has none of these entries"]
    return (REPRODUCED if all(results) else NOT_REPRODUCED), lines


INTERVENTION_LABELS = {"linear_unigram": "linear unigram DAS", "linear_bigram": "linear bigram DAS",
                       "onion": "onion intervention", "onion_control": "γ = 1 control"}
PROBE_LABELS = {"linear": "linear probe", "mlp": "MLP probe", "onion": "onion probe",
                "gru_autoregressive": "GRU-AR probe", "gru_no_input": "GRU-no-input probe"}


def claim_learns_task(base: pd.DataFrame):
    """Every trained GRU learns the task: mean exact match ≥ the paper's − max(2 s.d., 0.05)."""
    entries = [(r["variant"], "base", int(r["size"]), "high") for _, r in base.iterrows()]
    return _checks(base.assign(kind="base"), sorted(entries), {"base": "GRU"})


def claim_small_ar_interventions(interventions: pd.DataFrame):
    """Autoregressive N = 48/64: linear unigram and bigram DAS low, onion intervention high (bands
    from the paper), γ = 1 control ≤ 0.26 (the paper's ≈ 0.21 + 0.05)."""
    entries = [("autoregressive", kind, size, direction) for size in SMALL
               for kind, direction in [("linear_unigram", "low"), ("linear_bigram", "low"),
                                       ("onion", "high"), ("onion_control", "low")]]
    return _checks(interventions, entries, INTERVENTION_LABELS, {"onion_control": CONTROL_LIMIT})


def claim_linear_only_large(interventions: pd.DataFrame):
    """Autoregressive: linear unigram ≥ 0.9 only from N = 512; bigram ≥ unigram − 0.02 at every size."""
    ar = interventions[interventions["variant"] == "autoregressive"]
    lines, ok = [], True
    for size in sorted(ar["size"].unique()):
        uni, bi = _row(ar, size=size, kind="linear_unigram"), _row(ar, size=size, kind="linear_bigram")
        if uni is None or bi is None:
            continue
        ok &= bi["mean"] >= uni["mean"] - 0.02 and (uni["mean"] >= 0.9) == (size >= 512)
        lines.append(f"N={size}: unigram {_fmt(uni)}, bigram {_fmt(bi)}")
    if not lines:
        return NOT_TESTABLE, ["no linear interventions on autoregressive GRUs in this grid"]
    if ar["size"].max() < 512:
        lines.append("the grid has no N ≥ 512, so only 'bigram ≥ unigram' and 'no linear success "
                     "below 512' are tested")
        return (PARTLY if ok else NOT_REPRODUCED), lines
    return (REPRODUCED if ok else NOT_REPRODUCED), lines


def claim_small_ar_probes(probes: pd.DataFrame):
    """Autoregressive N = 48/64: linear, MLP and GRU-no-input probes low; onion and GRU-AR probes
    high (bands from the paper)."""
    entries = [("autoregressive", kind, size, direction) for size in SMALL
               for kind, direction in [("linear", "low"), ("mlp", "low"), ("onion", "high"),
                                       ("gru_autoregressive", "high"), ("gru_no_input", "low")]]
    return _checks(probes, entries, PROBE_LABELS)


def claim_no_input_linear(interventions: pd.DataFrame, probes: pd.DataFrame):
    """No-input GRUs, at each size in the grid: linear bigram DAS and the linear probe high, the
    onion intervention low (bands from the paper); and where the grid has both variants at a size
    at which the paper's onion accuracies differ by more than 2 s.d. of each, ours differ the same way."""
    sizes = sorted(set(interventions.loc[interventions["variant"] == "no_input", "size"])
                   | set(probes.loc[probes["variant"] == "no_input", "size"]))
    verdicts, lines = [], []
    for size in sizes:
        for table, entries, labels in [
            (interventions, [("no_input", "linear_bigram", size, "high"),
                             ("no_input", "onion", size, "low")], INTERVENTION_LABELS),
            (probes, [("no_input", "linear", size, "high")], PROBE_LABELS),
        ]:
            verdict, evidence = _checks(table, entries, labels)
            verdicts.append(verdict)
            lines += evidence
        ni = _row(interventions, variant="no_input", kind="onion", size=size)
        ar = _row(interventions, variant="autoregressive", kind="onion", size=size)
        reported = {v: paper.INTERVENTIONS[v]["onion"].get(size) for v in ("no_input", "autoregressive")}
        if ni is not None and ar is not None and None not in reported.values():
            (m_ni, sd_ni), (m_ar, sd_ar) = reported["no_input"], reported["autoregressive"]
            if abs(m_ar - m_ni) > 2 * max(sd_ni, sd_ar):
                ok = (ar["mean"] - ni["mean"]) * (m_ar - m_ni) > 0
                verdicts.append(REPRODUCED if ok else NOT_REPRODUCED)
                lines.append(f"onion intervention N={size}: no input {_fmt(ni)} vs autoregressive "
                             f"{_fmt(ar)} (paper {m_ni:.2f} vs {m_ar:.2f}) {'✓' if ok else '✗'}")
    tested = [v for v in verdicts if v != NOT_TESTABLE]
    if not tested:
        return NOT_TESTABLE, ["the grid has no no-input GRUs"]
    return (REPRODUCED if all(v == REPRODUCED for v in tested) else NOT_REPRODUCED), lines


NO_INPUT_SAMPLING = (
    "Measured causes (README: Seeds and the training set's sampling; no-input N = 64, 5 seeds, "
    "`grid: noinput64`). On the authors' distinct set, which this run trains on, seeds differ "
    "widely: the linear probe reads 0.71–0.94 and linear bigram DAS 0.80–0.98 over seeds 0–4. The "
    "default grid's seeds 0 and 1 are the least linear of the five (measured before training ran "
    "packed; packed, they read 0.75 / 0.71 and 0.86 / 0.88); over all five the means, 0.81 "
    "± 0.09 (linear probe) and 0.90 ± 0.08 (bigram DAS), meet the paper's criteria. Every probe "
    "fails length 2 on these models (linear probe ≤ 0.011 on all five seeds): it is 0.07% of the "
    "training set and 3.6% of the validation set, up to 0.036 of exact match. Trained on the "
    "i.i.d. set (`data.train_sampling: iid`), every seed reads at least 0.90 with the linear probe "
    "and 0.95 with bigram DAS (means 0.94 and 0.97, at or above the paper's). Run more seeds "
    "(`grid: noinput64`) or the i.i.d. set to test claim 5 beyond seed noise.")


GRU_NO_INPUT_PROBE = (
    "What is measured about the GRU-no-input probe on small autoregressive GRUs (README: The probes' "
    "training states): it reads short sequences (lengths 2–4) and almost nothing from length 6 on, "
    "so its accuracy follows the share of short sequences it trains on. Trained on the first "
    "100,000 training sequences (the former states: 11% of length 3, against 2.6% in the whole "
    "training set), it read 0.17 ± 0.02 over 5 seeds at N = 48; on a uniform sample of the "
    "training set (the authors' length mix, the default now) two N = 48 models read 0.110 / 0.115 "
    "where the former states gave 0.143 / 0.174 (seed 0 with the paper's own schedule: 0.130), inside "
    "the paper's 0.10 ± 0.02. A shortfall left "
    "after that is a seed or model difference, not a known difference from the authors' set-up.")


def contrast_verdict(small_ar_interventions: str, small_ar_probes: str, no_input: str) -> str:
    """The paper's central claim needs both directions: linear methods fail on small autoregressive
    GRUs (claims 2 and 4) *and* succeed where the state is linear (claim 5)."""
    parts = (small_ar_interventions, small_ar_probes, no_input)
    if NOT_REPRODUCED in parts:
        return NOT_REPRODUCED
    return REPRODUCED if all(p == REPRODUCED for p in parts) else NOT_TESTABLE


def differences_from_authors(settings: dict, seeds: int) -> list[str]:
    """One line per setting of this run (config sections data, train, interventions, probes, extract, with
    the grid's overrides, and the per-kind ones of `interventions_by_kind` and `probes_by_kind`)
    that differs from the authors' (paper.AUTHORS_SETTINGS), and the seeds."""
    lines = [f"{section}.{key} = {settings.get(section, {}).get(key)!r} (the authors: {value!r})"
             for section, values in paper.AUTHORS_SETTINGS.items() for key, value in values.items()
             if settings.get(section, {}).get(key, value) != value]
    lines += [f"{section}[{kind}].{key} = {value!r}, for the {kind} kind only (the authors: "
              f"{paper.AUTHORS_SETTINGS[section].get(key)!r})"
              for section in ("interventions", "probes")
              for kind, values in settings.get(f"{section}_by_kind", {}).items()
              for key, value in values.items() if paper.AUTHORS_SETTINGS[section].get(key) != value]
    if seeds < paper.SEEDS:
        lines.append(f"{seeds} seed{'s' if seeds > 1 else ''} per entry (the authors: {paper.SEEDS})")
    return lines


def write_summary(base_csv, interventions_csv, probes_csv, out, append=(), settings=None) -> str:
    """Build the summary page from the three tidy tables and the run's `settings` (for the list of
    differences from the authors), then the Markdown files `append` (the recurrent cells' onion
    signature); returns the Markdown."""
    base, interventions, probes = (pd.read_csv(p) for p in (base_csv, interventions_csv, probes_csv))
    sizes = sorted(set(base["size"]))
    models = ", ".join(f"{v} N = {', '.join(map(str, sorted(g['size'])))}"
                       for v, g in base.groupby("variant"))
    results = {
        "learns": claim_learns_task(base),
        "small_int": claim_small_ar_interventions(interventions),
        "large": claim_linear_only_large(interventions),
        "small_probe": claim_small_ar_probes(probes),
        "no_input": claim_no_input_linear(interventions, probes),
    }
    claims = [
        ("1. All GRUs learn the task (paper: 0.95 at N = 48 autoregressive, 1.00 from N = 128).",
         claim_learns_task, "learns"),
        ("2. Small autoregressive GRUs: linear DAS ≈ 0, onion intervention ≈ 0.8–0.9, γ = 1 control ≈ 0.2.",
         claim_small_ar_interventions, "small_int"),
        ("3. Linear DAS succeeds only on large autoregressive GRUs; bigram ≥ unigram.",
         claim_linear_only_large, "large"),
        ("4. Small autoregressive GRUs: linear and MLP probes ≈ 0, onion probe and GRU-AR ≥ 0.9, "
         "GRU-no-input low.", claim_small_ar_probes, "small_probe"),
        ("5. No-input GRUs store linearly at smaller sizes; onion interventions work worse on them.",
         claim_no_input_linear, "no_input"),
    ]
    contrast = contrast_verdict(results["small_int"][0], results["small_probe"][0],
                                results["no_input"][0])
    lines = ["# What this run reproduced", "",
             f"Models: {models}. Numbers are exact match, mean ± s.d. over seeds; tables in "
             "`data/tables/`, figures in `data/figures/`.", "",
             "Criteria come from the paper's numbers, not ours: where the paper reports a method as "
             "failing, our mean must be at most its mean + max(2 s.d., 0.05); where it reports "
             "success, at least its mean − max(2 s.d., 0.05).", "",
             "## The contrast: linear methods fail on small autoregressive GRUs and succeed where "
             "the state is linear", "",
             f"**{contrast}.** Criterion: {' '.join(contrast_verdict.__doc__.split())} Claims 2, 4 and 5: "
             f"{results['small_int'][0]}, {results['small_probe'][0]}, {results['no_input'][0]}.", ""]
    for title, claim, key in claims:
        verdict, evidence = results[key]
        lines += [f"## {title}", "", f"**{verdict}.** Criterion: {' '.join(claim.__doc__.split())}", ""]
        lines += [f"- {e}" for e in evidence] + [""]
        if key == "no_input" and verdict == NOT_REPRODUCED and \
                (settings or {}).get("data", {}).get("train_sampling") == "distinct":
            lines += [NO_INPUT_SAMPLING, ""]
        if key == "small_probe" and any(e.startswith("GRU-no-input probe") and e.endswith("✗") for e in evidence):
            lines += [GRU_NO_INPUT_PROBE, ""]
    large = max(sizes)
    lines += ["## 6. Gates: sharp, staggered closing at N = 1024; gradual, synchronous closing at N = 64.",
              "", f"**{'see the figure' if large >= 1024 else NOT_TESTABLE}.** Judged by eye in "
              f"`data/figures/fig2_gates.pdf` (smallest and largest size, N = {min(sizes)} and "
              f"N = {large}); the sharp closing needs N = 1024 in the grid.", ""]
    differences = differences_from_authors(settings or {}, int(base["seeds"].max()))
    lines += ["## Where this run differs from the authors' settings", "",
              "Every setting of this run that is not the authors' (their code; PAPER.md §2–5). A "
              "verdict above may depend on any of them.", ""]
    lines += [f"- {d}" for d in differences] or ["- none"]
    lines += [""]
    text = "\n".join(lines + [open(path).read() for path in append])
    with open(out, "w") as f:
        f.write(text)
    return text


def run_summary(base_csv, interventions_csv, probes_csv, out, append=(), settings=None) -> None:
    """The write_summary job (write_summary, then a log line)."""
    from onion.log import log
    write_summary(base_csv, interventions_csv, probes_csv, out, append, settings)
    log(f"wrote {out}")
