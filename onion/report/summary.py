"""A one-page summary: which of the paper's claims (PAPER.md §9) the results in data/ reproduce.

Every criterion is derived from the paper's own numbers, never from ours: an entry the paper reports
as low must have our mean at most the paper's mean + max(2 s.d., 0.05), an entry it reports as high
at least the paper's mean − max(2 s.d., 0.05). Whether our mean is on the right side is decided
only when it lies at least Z standard errors from that limit, either way (DECISION_RULE); otherwise
the entry is not decided at its number of seeds. The criteria and the rule are written on the page
next to our numbers. A claim whose sizes or variants are missing is reported as not testable.
"""

from __future__ import annotations

import math

import pandas as pd

from onion.report import paper
from onion.report.gates import OPEN, SHARP, STAGGERED, describe, gate_measures, gates_contrast

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "NOT reproduced", "not testable here"
PARTLY = "consistent so far, not fully testable here"
UNDECIDED = "not decided"  # the verdict reads "not decided at k seeds"
Z = 2.0  # standard errors of our mean between it and a limit for a decision
SD_FLOOR = 0.005  # the paper rounds its s.d. to 0.01: a reported 0.00 is below 0.005
DECISION_RULE = (
    f"An entry is decided when our mean lies at least {Z:g} standard errors from its limit, on "
    "either side: the standard error is σ/√k for k seeds, σ the larger of our s.d. over seeds and the "
    f"paper's (at least {SD_FLOOR}); a comparison of two entries uses √(σ₁²/k₁ + σ₂²/k₂). A claim is "
    "reproduced when every entry is decided on the passing side, not reproduced when any is decided "
    "on the failing side, and otherwise not decided at the fewest seeds among its undecided entries. The rule is the same for "
    "entries where the paper reports failure and where it reports success.")


def spread(row) -> float:
    """σ of one entry: the larger of our s.d. over seeds and the paper's, at least SD_FLOOR."""
    ours = row["sd"] if row["seeds"] > 1 and row["sd"] == row["sd"] else 0.0
    theirs = row["paper_sd"] if row["paper_sd"] == row["paper_sd"] else 0.0
    return max(ours, theirs, SD_FLOOR)


def standard_error(*rows) -> float:
    """Standard error of one entry's mean, or of a difference of entries' means."""
    return math.sqrt(sum(spread(r) ** 2 / int(r["seeds"]) for r in rows))


def decide(distance: float, error: float) -> bool | None:
    """`distance`: how far our mean lies on the passing side of the limit (negative: the failing
    side). True/False when at least Z standard errors `error` away, None (not decided) otherwise."""
    if distance >= Z * error:
        return True
    if distance <= -Z * error:
        return False
    return None


def seeds_to_decide(distance: float, error: float, seeds: int) -> str:
    """How many seeds would decide an entry if its mean and spread stayed as they are."""
    if distance == 0:
        return "no number of seeds decides it at this mean"
    return f"about {math.ceil(seeds * (Z * error / abs(distance)) ** 2)} seeds would decide it if mean and spread stay"


def undecided(seeds: int) -> str:
    """The verdict of a claim not decided at `seeds` seeds."""
    return f"{UNDECIDED} at {seeds} seed{'s' if seeds > 1 else ''}"


def undecided_seeds(verdict: str) -> int | None:
    """k of an undecided(k) verdict, None for any other verdict."""
    return int(verdict.split(" at ")[1].split()[0]) if verdict.startswith(UNDECIDED) else None


def combine(outcomes: list[bool | None], seeds: list[int]) -> str:
    """A claim's verdict from its entries' decisions (None: not decided) and their seed counts."""
    if any(o is False for o in outcomes):
        return NOT_REPRODUCED
    open_seeds = [k for o, k in zip(outcomes, seeds) if o is None]
    return undecided(min(open_seeds)) if open_seeds else REPRODUCED
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
    other = ""
    if "grid" in row and not row["grid"]:  # the tables put this grid's settings first (onion.report.tables)
        settings = row["settings"] if isinstance(row.get("settings"), str) else ""
        other = f"; other settings than this grid's: train {row['train']}" + (f", {settings}" if settings else "")
    return f"{row['mean']:.2f}{sd} ({seeds} seed{'s' if seeds > 1 else ''}{other})"


NO_PAPER = "no paper number"


def check_entry(row, direction: str, limit: float | None = None) -> tuple[bool | None | str, str]:
    """(decision, evidence) for one table row (one entry of a table); `direction` is 'high' or
    'low'. The limit comes from the row's paper entry unless given. decision: True or False when
    decided (DECISION_RULE), None when not decided at the row's seeds, NO_PAPER when the paper has
    no number for it."""
    if limit is None:
        if row["paper_mean"] != row["paper_mean"]:
            return NO_PAPER, f"{_fmt(row)}; not in the paper"
        sign = -1 if direction == "high" else 1
        limit = row["paper_mean"] + sign * margin(row["paper_sd"])
    distance = row["mean"] - limit if direction == "high" else limit - row["mean"]
    error = standard_error(row)
    ok = decide(distance, error)
    bound = "≥" if direction == "high" else "≤"
    evidence = f"{_fmt(row)}, needs {bound} {limit:.2f} "
    if ok is None:
        return None, evidence + (f"? within {Z:g} s.e. ({Z * error:.3f}) of it: not decided; "
                                 f"{seeds_to_decide(distance, error, int(row['seeds']))}")
    return ok, evidence + ("✓" if ok else "✗")


def _checks(table: pd.DataFrame, entries: list[tuple[str, str, int, str]], labels: dict,
            limits: dict | None = None) -> tuple[str, list[str]]:
    """Verdict over (variant, kind, size, direction) entries; entries the grid lacks are skipped."""
    lines, results, seeds = [], [], []
    for variant, kind, size, direction in entries:
        row = _row(table, variant=variant, kind=kind, size=size)
        if row is None:
            continue
        ok, evidence = check_entry(row, direction, (limits or {}).get(kind))
        lines.append(f"{labels.get(kind, kind)} {variant} N={size}: {evidence}")
        if ok is not NO_PAPER:
            results.append(ok)
            seeds.append(int(row["seeds"]))
    if not results:
        return NOT_TESTABLE, lines or ["data/ has none of these entries"]
    return combine(results, seeds), lines


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
    lines, outcomes, seeds = [], [], []
    for size in sorted(ar["size"].unique()):
        uni, bi = _row(ar, size=size, kind="linear_unigram"), _row(ar, size=size, kind="linear_bigram")
        if uni is None or bi is None:
            continue
        order = decide(bi["mean"] - uni["mean"] + 0.02, standard_error(uni, bi))
        threshold = decide((uni["mean"] - 0.9) * (1 if size >= 512 else -1), standard_error(uni))
        outcomes += [order, threshold]
        seeds += [min(int(uni["seeds"]), int(bi["seeds"])), int(uni["seeds"])]
        marks = {True: "✓", False: "✗", None: "? (not decided)"}
        lines.append(f"N={size}: unigram {_fmt(uni)} {'≥' if size >= 512 else '<'} 0.9 {marks[threshold]}; "
                     f"bigram {_fmt(bi)} ≥ unigram − 0.02 {marks[order]}")
    if not lines:
        return NOT_TESTABLE, ["no linear interventions on autoregressive GRUs in data/"]
    verdict = combine(outcomes, seeds)
    if ar["size"].max() < 512:
        lines.append("data/ has no N ≥ 512, so only 'bigram ≥ unigram' and 'no linear success "
                     "below 512' are tested")
        return (PARTLY if verdict == REPRODUCED else verdict), lines
    return verdict, lines


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
                ok = decide((ar["mean"] - ni["mean"]) * (1 if m_ar > m_ni else -1), standard_error(ar, ni))
                k = min(int(ar["seeds"]), int(ni["seeds"]))
                verdicts.append(combine([ok], [k]))
                lines.append(f"onion intervention N={size}: no input {_fmt(ni)} vs autoregressive "
                             f"{_fmt(ar)} (paper {m_ni:.2f} vs {m_ar:.2f}) "
                             f"{ {True: '✓', False: '✗', None: '? (not decided)'}[ok]}")
    tested = [v for v in verdicts if v != NOT_TESTABLE]
    if not tested:
        return NOT_TESTABLE, ["data/ has no no-input GRUs"]
    return merge_verdicts(tested), lines


NO_INPUT_SAMPLING = (
    "Measured causes (docs/results.md: No-input N = 64 over five seeds). On the authors' distinct "
    "set, which this run trains on, seeds differ widely: over seeds 0–4 (grids `default` and "
    "`noinput64` in one directory, code f1380cd) the linear probe reads 0.71–0.91 and linear bigram "
    "DAS 0.86–0.98, and the default grid's seeds 0 and 1 are the least linear of the five. The "
    "five-seed means are 0.81 ± 0.08 (linear probe, bar 0.79) and 0.93 ± 0.05 (bigram DAS, bar "
    "0.83): the linear probe's seeds spread more than the paper's (s.d. 0.08 against 0.05), so its "
    "mean stays within 2 standard errors of its bar at five seeds. Every probe fails length 2 on these "
    "models (linear probe ≤ 0.006 on all five seeds): it is 0.07% of the training set and 3.6% of "
    "the validation set, up to 0.036 of exact match. Trained on the i.i.d. set "
    "(`data.train_sampling: iid`, recorded in 0fd1d20), every seed reads at least 0.90 with the linear "
    "probe and 0.95 with bigram DAS (means 0.94 and 0.97, at or above the paper's). More seeds, or "
    "the i.i.d. set in a directory of its own, test claim 5 beyond seed noise.")


GRU_NO_INPUT_PROBE = (
    "What is measured about the GRU-no-input probe on small autoregressive GRUs (docs/calibration.md: "
    "The probes' training states): it reads short sequences (lengths 2–4) and almost nothing from length 6 on, "
    "so its accuracy follows the share of short sequences it trains on. Trained on the first "
    "100,000 training sequences (the former states: 11% of length 3, against 2.6% in the whole "
    "training set), it read 0.17 ± 0.02 over 5 seeds at N = 48; on a uniform sample of the "
    "training set (the authors' length mix, the default now) two N = 48 models read 0.110 / 0.115 "
    "where the former states gave 0.143 / 0.174 (seed 0 with the paper's own schedule: 0.130), inside "
    "the paper's 0.10 ± 0.02. A shortfall left "
    "after that is a seed or model difference, not a known difference from the authors' set-up.")


CLAIM_MODELS = {  # (variant, size) -> whether a claim's entries include that model
    "learns": lambda variant, size: True,
    "small_int": lambda variant, size: variant == "autoregressive" and size in SMALL,
    "large": lambda variant, size: variant == "autoregressive",
    "small_probe": lambda variant, size: variant == "autoregressive" and size in SMALL,
    "no_input": lambda variant, size: variant == "no_input",
}


def deciding_grids(grids: dict, wanted, seeds: int) -> list[tuple[str, int]]:
    """(name, seeds) of the config's grids with more than `seeds` seeds of a GRU model that
    `wanted(variant, size)` accepts: the runs that would add seeds to an undecided claim."""
    found = []
    for name, grid in grids.items():
        counts = [len(block["seeds"]) for block in grid.get("models", [])
                  if "gru" in block.get("cells", ["gru"])
                  and any(wanted(v, n) for v in block["variants"] for n in block["sizes"])]
        if counts and max(counts) > seeds:
            found.append((name, max(counts)))
    return sorted(found, key=lambda item: (item[1], item[0]))


def resting_on(base: pd.DataFrame, wanted, seeds: int):
    """`wanted(variant, size)` narrowed to the GRUs in `base` (the base-accuracy table) that rest
    on at most `seeds` seeds: the models whose entries a claim not decided at `seeds` seeds waits on."""
    def accepts(variant, size) -> bool:
        row = _row(base, variant=variant, size=size)
        return wanted(variant, size) and row is not None and int(row["seeds"]) <= seeds
    return accepts


def merge_verdicts(verdicts: list[str]) -> str:
    """One verdict from several tested ones: NOT reproduced if any is, reproduced if all are, else
    the undecided one with the fewest seeds."""
    if NOT_REPRODUCED in verdicts:
        return NOT_REPRODUCED
    open_seeds = [undecided_seeds(v) for v in verdicts if undecided_seeds(v) is not None]
    return undecided(min(open_seeds)) if open_seeds else REPRODUCED


def contrast_verdict(small_ar_interventions: str, small_ar_probes: str, no_input: str) -> str:
    """The paper's central claim needs both directions: linear methods fail on small autoregressive
    GRUs (claims 2 and 4) *and* succeed where the state is linear (claim 5)."""
    parts = (small_ar_interventions, small_ar_probes, no_input)
    if NOT_TESTABLE in parts and NOT_REPRODUCED not in parts:
        return NOT_TESTABLE
    return merge_verdicts(list(parts))


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


def gates_section(gates) -> list[str]:
    """Claim 6 from the trajectories (small, large) the gate figures draw (onion.report.gates)."""
    title = "## 6. Gates: sharp, staggered closing at N = 1024; gradual, synchronous closing at N = 64."
    criterion = (f"Criterion: over the input phase of `ab1cadf2`, per channel that opens (1 − z ≥ {OPEN}), "
                 "its largest one-step drop of 1 − z (sharpness: the median over channels) and the step "
                 f"of that drop (staggering: their s.d.); sharp means ≥ {SHARP}, staggered ≥ {STAGGERED} "
                 "step; the large model must be sharp and staggered, the small one gradual and "
                 "synchronous. One model each (no seed spread). Figure: `data/figures/fig2_gates.pdf`.")
    if not gates:
        return [title, "", f"**{NOT_TESTABLE}.** No trajectories given.", ""]
    from onion.report.figures import gate_matrix
    measured = []
    for path in gates:
        matrix, _, length, model = gate_matrix(path)
        measured.append((model, gate_measures(matrix, length)))
    (small_model, small), (large_model, large) = measured
    lines = [f"- N = {m['size']} ({m['variant']}, seed {m['seed']}): {describe(g)}" for m, g in measured]
    if large_model["size"] < 512 or small_model["size"] > 64:
        verdict = NOT_TESTABLE
        lines.append("the comparison needs a GRU of N ≥ 512 (the paper: 1024) beside one of N ≤ 64 in data/")
    else:
        verdict = REPRODUCED if gates_contrast(small, large) else NOT_REPRODUCED
    return [title, "", f"**{verdict}.** {criterion}", "", *lines, ""]


def write_summary(base_csv, interventions_csv, probes_csv, out, append=(), settings=None, gates=()) -> str:
    """Build the summary page from the three tidy tables, the gate trajectories `gates` (small,
    large) and the run's `settings` (for the list of differences from the authors and the grids
    that add seeds), then the Markdown files `append` (the recurrent cells' onion signature);
    returns the Markdown."""
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
    grids = (settings or {}).get("grids", {})
    lines = ["# What the results in data/ reproduce", "",
             f"Models: {models}. Numbers are exact match, mean ± s.d. over seeds (the number of "
             "seeds each entry rests on in brackets), pooled over every run in data/ with the same "
             "settings keys; tables in `data/tables/`, figures in `data/figures/`.", "",
             "Criteria come from the paper's numbers, not ours: where the paper reports a method as "
             "failing, our mean must be at most its mean + max(2 s.d., 0.05); where it reports "
             "success, at least its mean − max(2 s.d., 0.05). " + DECISION_RULE, "",
             "## The contrast: linear methods fail on small autoregressive GRUs and succeed where "
             "the state is linear", "",
             f"**{contrast}.** Criterion: {' '.join(contrast_verdict.__doc__.split())} Claims 2, 4 and 5: "
             f"{results['small_int'][0]}, {results['small_probe'][0]}, {results['no_input'][0]}.", ""]
    for title, claim, key in claims:
        verdict, evidence = results[key]
        lines += [f"## {title}", "", f"**{verdict}.** Criterion: {' '.join(claim.__doc__.split())}", ""]
        lines += [f"- {e}" for e in evidence] + [""]
        if undecided_seeds(verdict) is not None:
            k = undecided_seeds(verdict)
            commands = [f"`snakemake --config grid={name}` ({n} seeds)"
                        for name, n in deciding_grids(grids, resting_on(base, CLAIM_MODELS[key], k), k)]
            lines += ["More seeds decide it: " + ("; ".join(commands) if commands else
                      "add seeds to a grid's `models` block for these entries") +
                      " (in this directory: nothing already trained is retrained).", ""]
        if key == "no_input" and verdict != REPRODUCED and \
                (settings or {}).get("data", {}).get("train_sampling") == "distinct":
            lines += [NO_INPUT_SAMPLING, ""]
        if key == "small_probe" and any(e.startswith("GRU-no-input probe") and ("✗" in e or "not decided" in e)
                                       for e in evidence):
            lines += [GRU_NO_INPUT_PROBE, ""]
    lines += gates_section(gates)
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


def run_summary(base_csv, interventions_csv, probes_csv, out, append=(), settings=None, gates=()) -> None:
    """The write_summary job (write_summary, then a log line)."""
    from onion.log import log
    write_summary(base_csv, interventions_csv, probes_csv, out, append, settings, gates)
    log(f"wrote {out}")
