"""Exact-match accuracy of decoded sequences, overall and broken down."""

from __future__ import annotations

import numpy as np
import torch

from onion.data import SequenceSet


def accuracy_summary(pred: np.ndarray, target: np.ndarray, lengths: np.ndarray,
                     groups: dict[str, np.ndarray] | None = None) -> dict:
    """Exact match (all first L tokens right) and breakdowns.

    pred, target: [n, T] token ids; lengths: [n]. `per_position` is the token accuracy at each
    position over the sequences long enough to have it; `per_length` the exact match per length;
    each extra group g in `groups` ([n] labels) gives `per_<g>` exact match per label.
    """
    pred, target, lengths = np.asarray(pred), np.asarray(target), np.asarray(lengths)
    width = min(pred.shape[1], target.shape[1])
    valid = np.arange(width)[None, :] < lengths[:, None]  # [n, T]
    right = (pred[:, :width] == target[:, :width]) | ~valid
    exact = right.all(axis=1)
    summary = {
        "exact_match": float(exact.mean()) if len(exact) else float("nan"),
        "n": int(len(exact)),
        "per_position": {int(p): float(right[valid[:, p], p].mean())
                         for p in range(width) if valid[:, p].any()},
        "per_length": _group_mean(exact, lengths),
    }
    for name, labels in (groups or {}).items():
        summary[f"per_{name}"] = _group_mean(exact, np.asarray(labels))
    return summary


def _group_mean(values: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    return {int(k): float(values[labels == k].mean()) for k in np.unique(labels)}


@torch.no_grad()
def predict(model, data: SequenceSet, device, batch_size: int = 2048) -> np.ndarray:
    """Greedy outputs of `model` for every sequence: [n, max_length]."""
    model.eval()
    steps = data.tokens.shape[1]
    outputs = []
    for start in range(0, len(data), batch_size):
        tokens = torch.as_tensor(data.tokens[start:start + batch_size], device=device)
        lengths = torch.as_tensor(data.lengths[start:start + batch_size], device=device)
        outputs.append(model.generate(model.encode(tokens, lengths), steps).cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, steps), dtype=np.int64)


def evaluate_model(model, data: SequenceSet, device) -> dict:
    """accuracy_summary of the model's greedy decoding on `data`."""
    return accuracy_summary(predict(model, data, device), data.tokens, data.lengths)
