"""Claim 6 as numbers: how sharply and how staggered the update gates close (PAPER.md §6, Fig. 2).

The paper sees the N = 1024 GRU's channels close sharply at position-specific times and the N = 64
GRU's close gradually and together. From 1 − z (the paper's input gate) over the input phase of
one trajectory, per channel that opens (1 − z ≥ OPEN at some input step):
- sharpness: its largest one-step drop of 1 − z (1: from fully open to closed in one step);
- closing step: the step after which that drop happens.
A model's `sharpness` is the median over those channels, its `staggering` the s.d. of their
closing steps (in steps). Sharp means sharpness ≥ SHARP, staggered means staggering ≥ STAGGERED.
The thresholds were fixed before any model was measured. Torch-free.
"""

from __future__ import annotations

import numpy as np

OPEN = 0.5  # a channel counts when its 1 − z reaches this somewhere in the input phase
SHARP = 0.5  # median largest one-step drop: at least half the gate's range in one step
STAGGERED = 1.0  # s.d. of the closing steps over channels, in steps


def gate_measures(gates: np.ndarray, length: int) -> dict:
    """gates [N, T] = 1 − z per channel and time step (input phase first, `length` steps) ->
    {"sharpness", "staggering", "channels": how many channels open}."""
    inputs = gates[:, :length]  # [N, L]
    opened = inputs.max(axis=1) >= OPEN
    if opened.sum() == 0 or length < 2:
        return {"sharpness": 0.0, "staggering": 0.0, "channels": int(opened.sum())}
    drops = inputs[opened, :-1] - inputs[opened, 1:]  # [n, L-1], positive where the gate closes
    return {"sharpness": float(np.median(drops.max(axis=1))),
            "staggering": float(np.std(drops.argmax(axis=1) + 1)),
            "channels": int(opened.sum())}


def describe(measures: dict) -> str:
    sharp = "sharp" if measures["sharpness"] >= SHARP else "gradual"
    staggered = "staggered" if measures["staggering"] >= STAGGERED else "synchronous"
    return (f"{sharp}, {staggered} (sharpness {measures['sharpness']:.2f}, staggering "
            f"{measures['staggering']:.2f} steps over {measures['channels']} open channels)")


def gates_contrast(small: dict, large: dict) -> bool:
    """The paper's Fig. 2: the large model sharp and staggered, the small one gradual and
    synchronous."""
    return (large["sharpness"] >= SHARP and large["staggering"] >= STAGGERED
            and small["sharpness"] < SHARP and small["staggering"] < STAGGERED)
