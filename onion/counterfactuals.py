"""Counterfactual data for interchange interventions (PAPER.md §4.1-4.3).

Every example has a target y: the sequence the frozen decoder should output from the intervened
state. `base` is the sequence whose final state is intervened on; `source` (linear DAS only) is the
sequence whose state supplies the patched values. Replacement tokens always differ from y's token
at that position, so no intervention is trivially a no-op.
"""

from __future__ import annotations

import dataclasses

import numpy as np

KINDS = ("linear_unigram", "linear_bigram", "onion", "onion_control")


@dataclasses.dataclass
class Counterfactuals:
    target: np.ndarray  # [n, T] y, padded with 0 after its length
    lengths: np.ndarray  # [n]
    base: np.ndarray  # [n, T]
    source: np.ndarray | None  # [n, T] for linear DAS, None for the onion intervention
    changed: np.ndarray  # [n, T] bool: the positions the intervention is responsible for
    variables: np.ndarray  # [n, V] bool: the causal variables moved (positions or bigrams)

    def __len__(self) -> int:
        return len(self.lengths)


def n_variables(kind: str, max_length: int) -> int:
    """Positions for unigram and onion interventions, bigrams (t, t+1) for the bigram one."""
    _check_kind(kind)
    return max_length - 1 if kind == "linear_bigram" else max_length


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown intervention kind {kind!r}; expected one of {KINDS}")


def _other_tokens(rng: np.random.Generator, tokens: np.ndarray, n_symbols: int) -> np.ndarray:
    """A uniformly random token different from `tokens`, element-wise."""
    return (tokens + rng.integers(1, n_symbols, size=tokens.shape)) % n_symbols


def make_counterfactuals(kind: str, target: np.ndarray, lengths: np.ndarray,
                         rng: np.random.Generator, n_symbols: int) -> Counterfactuals:
    """Counterfactual pairs for targets y (tokens [n, T], lengths [n])."""
    _check_kind(kind)
    n, width = target.shape
    valid = np.arange(width)[None, :] < lengths[:, None]  # [n, T]
    other = np.where(valid, _other_tokens(rng, target, n_symbols), 0)
    rows = np.arange(n)
    if kind == "linear_unigram":
        # I: each position with prob. 0.5; base differs from y on I, source differs from y off I
        changed = (rng.random((n, width)) < 0.5) & valid
        base = np.where(changed, other, target)
        source = np.where(valid & ~changed, other, target)
        return Counterfactuals(target, lengths, base, source, changed, changed.copy())
    k = (rng.random(n) * lengths).astype(np.int64)  # one position per example, uniform in [0, L)
    changed = np.zeros((n, width), dtype=bool)
    changed[rows, k] = True
    base = np.where(changed, other, target)
    if kind == "linear_bigram":
        # source keeps y at k-1, k, k+1 and is random elsewhere; move bigrams (k-1, k) and (k, k+1)
        keep = (np.abs(np.arange(width)[None, :] - k[:, None]) <= 1) & valid
        source = np.where(keep, target, other)
        variables = np.zeros((n, width - 1), dtype=bool)
        variables[rows[k >= 1], k[k >= 1] - 1] = True
        last = k <= lengths - 2
        variables[rows[last], k[last]] = True
        return Counterfactuals(target, lengths, base, source, changed, variables)
    # onion: corrupt position k of y; the intervention restores y's token there
    return Counterfactuals(target, lengths, base, None, changed, changed.copy())
