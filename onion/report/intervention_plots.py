"""Figures of learned intervention parameters: the onion scale per position, the DAS dimension budget.
Torch-free."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from onion.names import LINEAR_INTERVENTION_KINDS  # noqa: E402


def read_parameters(paths) -> pd.DataFrame:
    frames = []
    for path in paths:
        try:
            frames.append(pd.read_parquet(path))
        except Exception as err:
            raise ValueError(f"{path}: unreadable intervention parameter file ({err})") from err
    return pd.concat(frames, ignore_index=True)


def onion_scale_magnitudes(params, max_length: int):
    """Mean over channels of |s_j| for j = 0..max_length-1, per (variant, cell, size, seed, kind)
    row group (files without a cell column are from GRUs).

    params: a DataFrame of onion parameter rows -> DataFrame with columns variant, cell, size, seed,
    kind, position, scale."""
    if "cell" not in params:
        params = params.assign(cell="gru")
    keys = ["variant", "cell", "size", "seed", "kind"]
    rows = []
    for key, group in params.groupby(keys):
        for j in range(max_length):
            s = group["g"] * group["gamma"] ** j + group["beta"] * j + group["b"]
            rows.append({**dict(zip(keys, key)), "position": j, "scale": float(s.abs().mean())})
    return pd.DataFrame(rows)


def _save(fig, out) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_onion_scales(paths, out, max_length: int = 9, panels: str = "variant") -> None:
    """Mean over channels of |s_j| = |g·γ^j + β·j + b| per position j, log scale; one line per
    size (mean over seeds, bars = s.d.), one panel per decoder variant (`panels="variant"`) or per
    recurrent cell and variant (`panels="cell"`); the learned onion intervention only."""
    params = read_parameters(paths)
    params = params[params["kind"] == "onion"]
    if params.empty:
        raise ValueError("no onion intervention parameters among the inputs")
    scales = onion_scale_magnitudes(params, max_length)
    keys = ["variant"] if panels == "variant" else ["cell", "variant"]
    groups = sorted(scales.groupby(keys).groups)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.5), squeeze=False,
                             sharey=panels == "cell")
    for ax, key in zip(axes[0], groups):
        key = key if isinstance(key, tuple) else (key,)
        part = scales.loc[(scales[keys] == key).all(axis=1)]
        for size, group in part.groupby("size"):
            stats = group.groupby("position")["scale"].agg(["mean", "std"]).reset_index()
            ax.errorbar(stats["position"] + 1, stats["mean"], yerr=stats["std"].fillna(0),
                        marker="o", capsize=2, label=f"N={size}")
        ax.set_yscale("log")
        ax.set_xlabel("position j (1 = first token)")
        ax.set_ylabel("mean over channels of |s_j|")
        ax.set_title(f"onion intervention scale, {', '.join(map(str, key))}")
        ax.legend()
    _save(fig, out)


def plot_das_budget(paths, out, max_length: int = 9) -> None:
    """Rotated dimensions assigned to each position (unigram) or bigram, mean over seeds;
    one panel per (variant, kind), one bar per size; the last group is 'unassigned'."""
    params = read_parameters(paths)
    params = params[params["kind"].isin(LINEAR_INTERVENTION_KINDS)]
    if params.empty:
        raise ValueError("no linear intervention parameters among the inputs")
    variants = sorted(params["variant"].unique())
    kinds = [k for k in LINEAR_INTERVENTION_KINDS if k in set(params["kind"])]
    fig, axes = plt.subplots(len(variants), len(kinds), figsize=(5 * len(kinds), 3.5 * len(variants)),
                             squeeze=False)
    for ax, (variant, kind) in zip(axes.flat, [(v, k) for v in variants for k in kinds]):
        part = params[(params["variant"] == variant) & (params["kind"] == kind)]
        sizes = sorted(part["size"].unique())
        width = 0.8 / len(sizes)
        for i, size in enumerate(sizes):
            stats = part[part["size"] == size].groupby("variable")["n_dims"].agg(["mean", "std"])
            order = [v for v in stats.index if v >= 0] + [v for v in stats.index if v < 0]
            stats = stats.loc[order]
            x = [k + (i - (len(sizes) - 1) / 2) * width for k in range(len(stats))]
            ax.bar(x, stats["mean"], width, yerr=stats["std"].fillna(0), capsize=2, label=f"N={size}")
        labels = [str(v + 1) if kind == "linear_unigram" else f"{v + 1}-{v + 2}"
                  for v in order if v >= 0]
        ax.set_xticks(range(len(order)), labels + ["none"], fontsize=8)
        ax.set_xlabel("position" if kind == "linear_unigram" else "bigram (positions)")
        ax.set_ylabel("rotated dimensions assigned")
        ax.set_title(f"{kind.replace('_', ' ')} DAS, {variant}")
        ax.legend()
    _save(fig, out)


def run_figure_interventions(figure: str, parameters: list, out, max_length: int = 9) -> None:
    """The onion scales per decoder variant ("onion-scales") or per recurrent cell
    ("onion-scales-cells"), or the DAS dimension budget ("das-budget")."""
    from onion.log import log
    if figure == "onion-scales-cells":
        plot_onion_scales(parameters, out, max_length, panels="cell")
    else:
        {"onion-scales": plot_onion_scales, "das-budget": plot_das_budget}[figure](parameters, out, max_length)
    log(f"wrote {out}")
