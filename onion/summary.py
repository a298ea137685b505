"""A one-page summary: which of the paper's claims (PAPER.md §9) this run reproduced.

Each claim has an explicit criterion on our numbers (written next to it on the page); a claim
whose sizes or variants are missing from the grid is reported as not testable at this scale.
"""

from __future__ import annotations

import pandas as pd

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "NOT reproduced", "not testable here"
PARTLY = "consistent so far, not fully testable here"


def _cell(table: pd.DataFrame, **keys) -> tuple[float, float, int] | None:
    rows = table
    for key, value in keys.items():
        rows = rows[rows[key] == value]
    if rows.empty:
        return None
    row = rows.iloc[0]
    return float(row["mean"]), float(row["sd"]), int(row["seeds"])


def _fmt(cell) -> str:
    mean, sd, seeds = cell
    return f"{mean:.2f}" + (f" ± {sd:.2f}" if seeds > 1 else "") + f" ({seeds} seeds)"


def _verdict(ok: bool) -> str:
    return REPRODUCED if ok else NOT_REPRODUCED


def claim_learns_task(base: pd.DataFrame):
    """Every trained GRU learns the task: mean exact match within 0.05 of the paper's."""
    lines, ok = [], True
    for _, row in base.sort_values(["variant", "size"]).iterrows():
        close = row["mean"] >= row["paper_mean"] - 0.05
        ok &= close
        lines.append(f"{row['variant']} N={row['size']}: {_fmt((row['mean'], row['sd'], row['seeds']))}, "
                     f"paper {row['paper_mean']:.2f}")
    return _verdict(ok), lines


def claim_small_ar_interventions(interventions: pd.DataFrame):
    """N = 48/64 autoregressive: linear unigram and bigram ≤ 0.10, onion ≥ 0.70, control ≤ 0.40."""
    return _within_limits(interventions, {"linear_unigram": (None, 0.10), "linear_bigram": (None, 0.10),
                                          "onion": (0.70, None), "onion_control": (None, 0.40)})


def _within_limits(table: pd.DataFrame, limits: dict) -> tuple[str, list[str]]:
    """Verdict on N = 48/64 autoregressive cells: each kind's mean inside its (low, high) limits."""
    lines, ok = [], True
    for size in (48, 64):
        for kind, (low, high) in limits.items():
            cell = _cell(table, variant="autoregressive", size=size, kind=kind)
            if cell is None:
                continue
            ok &= (low is None or cell[0] >= low) and (high is None or cell[0] <= high)
            lines.append(f"{kind} N={size}: {_fmt(cell)}")
    return (_verdict(ok) if lines else NOT_TESTABLE), lines


def claim_linear_only_large(interventions: pd.DataFrame):
    """Autoregressive: linear unigram ≥ 0.9 only from N = 512; bigram ≥ unigram − 0.02 at every size."""
    ar = interventions[interventions["variant"] == "autoregressive"]
    lines, ok = [], True
    for size in sorted(ar["size"].unique()):
        uni, bi = _cell(ar, size=size, kind="linear_unigram"), _cell(ar, size=size, kind="linear_bigram")
        if uni is None or bi is None:
            continue
        ok &= bi[0] >= uni[0] - 0.02 and (uni[0] >= 0.9) == (size >= 512)
        lines.append(f"N={size}: unigram {_fmt(uni)}, bigram {_fmt(bi)}")
    if not lines:
        return NOT_TESTABLE, ["no linear interventions on autoregressive GRUs in this grid"]
    if ar["size"].max() < 512:
        lines.append("the grid has no N ≥ 512, so only 'bigram ≥ unigram' and 'no linear success "
                     "below 512' are tested")
        return (PARTLY if ok else NOT_REPRODUCED), lines
    return _verdict(ok), lines


def claim_small_ar_probes(probes: pd.DataFrame):
    """N = 48/64 autoregressive: linear and MLP ≤ 0.10, onion and GRU-AR ≥ 0.90, GRU-no-input ≤ 0.50."""
    return _within_limits(probes, {"linear": (None, 0.10), "mlp": (None, 0.10), "onion": (0.90, None),
                                   "gru_autoregressive": (0.90, None), "gru_no_input": (None, 0.50)})


def claim_no_input_linear(interventions: pd.DataFrame, probes: pd.DataFrame):
    """No-input GRUs: linear unigram and linear probe higher, onion intervention lower than autoregressive."""
    lines, ok, seen = [], True, False
    for size in sorted(interventions["size"].unique()):
        pairs = [("linear_unigram", interventions, +1), ("onion", interventions, -1), ("linear", probes, +1)]
        for kind, table, sign in pairs:
            ar = _cell(table, variant="autoregressive", size=size, kind=kind)
            ni = _cell(table, variant="no_input", size=size, kind=kind)
            if ar is None or ni is None:
                continue
            seen = True
            ok &= sign * (ni[0] - ar[0]) >= 0
            lines.append(f"{kind} N={size}: no input {_fmt(ni)} vs autoregressive {_fmt(ar)}")
    if not seen:
        return NOT_TESTABLE, ["the grid has no no-input GRUs"]
    return _verdict(ok), lines


def write_summary(base_csv, interventions_csv, probes_csv, out) -> str:
    """Build the summary page from the three tidy tables; returns the Markdown."""
    base, interventions, probes = (pd.read_csv(p) for p in (base_csv, interventions_csv, probes_csv))
    sizes = sorted(set(base["size"]))
    variants = sorted(set(base["variant"]))
    claims = [
        ("1. All GRUs learn the task (paper: 0.95 at N = 48 autoregressive, 1.00 from N = 128).",
         claim_learns_task.__doc__, claim_learns_task(base)),
        ("2. Small autoregressive GRUs: linear DAS ≈ 0, onion intervention ≈ 0.8–0.9, γ = 1 control ≈ 0.2.",
         claim_small_ar_interventions.__doc__, claim_small_ar_interventions(interventions)),
        ("3. Linear DAS succeeds only on large autoregressive GRUs; bigram ≥ unigram.",
         claim_linear_only_large.__doc__, claim_linear_only_large(interventions)),
        ("4. Small autoregressive GRUs: linear and MLP probes ≈ 0, onion probe and GRU-AR ≥ 0.9, "
         "GRU-no-input low.", claim_small_ar_probes.__doc__, claim_small_ar_probes(probes)),
        ("5. No-input GRUs store linearly at smaller sizes; onion interventions work worse on them.",
         claim_no_input_linear.__doc__, claim_no_input_linear(interventions, probes)),
    ]
    lines = ["# What this run reproduced", "",
             f"Grid: sizes {', '.join(map(str, sizes))}; variants {', '.join(variants)}. "
             "Numbers are exact match, mean ± s.d. over seeds; tables in `data/tables/`, figures in "
             "`data/figures/`.", ""]
    for title, criterion, (verdict, evidence) in claims:
        lines += [f"## {title}", "", f"**{verdict}.** Criterion: {criterion.strip()}", ""]
        lines += [f"- {e}" for e in evidence] + [""]
    large = max(sizes)
    lines += ["## 6. Gates: sharp, staggered closing at N = 1024; gradual, synchronous closing at N = 64.",
              "", f"**{'see the figure' if large >= 1024 else NOT_TESTABLE}.** Judged by eye in "
              f"`data/figures/fig2_gates.pdf` (smallest and largest size, N = {min(sizes)} and "
              f"N = {large}); the sharp closing needs N = 1024 in the grid.", ""]
    text = "\n".join(lines)
    with open(out, "w") as f:
        f.write(text)
    return text
