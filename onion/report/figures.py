"""Figures 2, 4 and 5 of the paper from Parquet/JSON results (never from a model): PDF and PNG.
Torch-free."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import seaborn as sns  # noqa: E402

from onion.files import vectors  # noqa: E402
from onion.names import PROBE_KINDS  # noqa: E402
from onion.report import paper  # noqa: E402

PROBE_LABELS = {"linear": "Linear", "mlp": "MLP", "onion": "Onion", "gru_autoregressive": "GRU –\nAR",
                "gru_no_input": "GRU –\nno input"}


def save(fig, outputs) -> None:
    """Save one figure to every path in `outputs` (the format follows the suffix)."""
    for path in outputs:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight", dpi=200)
    plt.close(fig)


def gate_matrix(path, text: str = "ab1cadf2") -> tuple[np.ndarray, list[str], int, dict]:
    """1 − z of the trajectory of `text`: ([N, 2L] matrix, x labels, L, {variant, size, seed})."""
    table = pq.read_table(path, filters=[("text", "=", text)])
    if table.num_rows == 0:
        raise ValueError(f"{path}: no trajectory for the input {text!r}")
    table = table.filter(pq.filters_to_expression([("example_id", "=", table.column("example_id")[0].as_py())]))
    table = table.sort_by("time")
    z = vectors(table, "z")  # [2L, N]
    labels = table.column("symbol").to_pylist()
    keys = {k: table.column(k)[0].as_py() for k in ("variant", "size", "seed")}
    return (1 - z).T, labels, len(text), keys


def _heatmap(ax, matrix, labels, length, title, cbar=True):
    sns.heatmap(matrix, ax=ax, vmin=0, vmax=1, cmap="viridis", cbar=cbar,
                cbar_kws={"label": "1 − z (input gate)"} if cbar else None,
                xticklabels=labels, yticklabels=False)
    ax.axvline(length, color="white", lw=1.5)  # input phase | output phase
    ax.set_xlabel("time step (input, then output phase; label = token fed)")
    ax.set_ylabel(f"channel (0..{matrix.shape[0] - 1})")
    ax.set_title(title)


def figure_gates(large, small, outputs, channels: int = 64, text: str = "ab1cadf2") -> None:
    """Fig. 2: (a) the first `channels` channels of the largest model, (b) all of the smallest."""
    m_large, labels, length, k_large = gate_matrix(large, text)
    m_small, _, _, k_small = gate_matrix(small, text)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    _heatmap(axes[0], m_large[:channels], labels, length,
             f"(a) N={k_large['size']}, first {min(channels, len(m_large))} channels", cbar=False)
    _heatmap(axes[1], m_small, labels, length, f"(b) N={k_small['size']}, all channels")
    fig.suptitle(f"Update gate 1 − z on '{' '.join(text)}' ({k_large['variant']}, seed {k_large['seed']})")
    save(fig, outputs)


def figure_all_channels(path, outputs, text: str = "ab1cadf2") -> None:
    """Fig. 5: every channel of one model."""
    matrix, labels, length, keys = gate_matrix(path, text)
    fig, ax = plt.subplots(figsize=(6, max(4.0, matrix.shape[0] / 40)))
    _heatmap(ax, matrix, labels, length, f"N={keys['size']} {keys['variant']} seed {keys['seed']}: "
             f"all {matrix.shape[0]} channels")
    save(fig, outputs)


def figure_probes(results: pd.DataFrame, outputs, size: int = 64, variant: str = "autoregressive") -> None:
    """Fig. 4: probe exact match on the N=`size` `variant` models, mean ± s.d. over seeds, paper beside."""
    rows = results[(results["size"] == size) & (results["variant"] == variant)]
    if rows.empty:
        raise ValueError(f"no probe results for {variant} N={size}")
    kinds = [k for k in PROBE_KINDS if k in set(rows["kind"])]
    stats = rows.groupby("kind")["exact_match"].agg(["mean", "std", "count"]).reindex(kinds)
    x = np.arange(len(kinds))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    colors = sns.color_palette("deep", len(kinds))
    ax.bar(x, stats["mean"], yerr=stats["std"].fillna(0), capsize=4, color=colors, label="ours")
    ref = [paper.PROBES.get((k, variant), {}).get(size, (np.nan, np.nan)) for k in kinds]
    ax.errorbar(x, [r[0] for r in ref], yerr=[r[1] for r in ref], fmt="D", color="black",
                capsize=3, label="paper")
    ax.set_xticks(x, [PROBE_LABELS.get(k, k) for k in kinds])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("exact match")
    seeds = int(stats["count"].max())
    ax.set_title(f"Probes on N={size} {variant} GRUs ({seeds} seed{'s' if seeds > 1 else ''})")
    ax.legend(loc="upper left")
    save(fig, outputs)


def run_figure(figure: str, inputs: list, outputs: list, channels: int = 64, size: int = 64,
               variant: str = "autoregressive", text: str = "ab1cadf2") -> None:
    """Fig. 2 ("gates": inputs = trajectories of the smallest, then the largest model), Fig. 5
    ("gates-all": one trajectories file), both on the input `text` (one of extract.texts), or
    Fig. 4 ("probes": probe result JSON files)."""
    from onion.log import log
    from onion.report.tables import read_metrics
    if figure == "gates":
        figure_gates(inputs[-1], inputs[0], outputs, channels, text)
    elif figure == "gates-all":
        figure_all_channels(inputs[0], outputs, text)
    else:
        figure_probes(read_metrics(inputs), outputs, size, variant)
    log(f"wrote {' and '.join(map(str, outputs))}")
