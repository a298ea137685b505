"""Counterfactual data for interchange interventions (PAPER.md §4.1-4.3).

Every example has a target y: the sequence the frozen decoder should output from the intervened
state. `base` is the sequence whose final state is intervened on; `source` (linear DAS only) is the
sequence whose state supplies the patched values. A replacement token is drawn uniformly from all
symbols, so it equals y's token one time in n_symbols, as in the authors' code (`replacement="any"`);
`replacement="different"` always draws another token, so no intervention is trivially a no-op.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from onion.names import INTERVENTION_KINDS, REPLACEMENTS
from onion.runtime import upload


@dataclasses.dataclass
class Counterfactuals:
    """Tensors on one device; built there, so a training step needs no transfer."""

    target: torch.Tensor  # [n, T] y, padded with 0 after its length
    lengths: torch.Tensor  # [n]
    base: torch.Tensor  # [n, T]
    source: torch.Tensor | None  # [n, T] for linear DAS, None for the onion intervention
    changed: torch.Tensor  # [n, T] bool: the positions the intervention is responsible for
    variables: torch.Tensor  # [n, V] bool: the causal variables moved (positions or bigrams)

    def __len__(self) -> int:
        return len(self.lengths)

    def part(self, rows) -> "Counterfactuals":
        """The examples `rows` (a slice or an index tensor)."""
        return Counterfactuals(**{f.name: None if getattr(self, f.name) is None
                                  else getattr(self, f.name)[rows] for f in dataclasses.fields(self)})

    def to(self, device) -> "Counterfactuals":
        """The same examples on `device`, uploaded without waiting (onion.runtime.upload)."""
        return Counterfactuals(**{f.name: None if getattr(self, f.name) is None
                                  else upload(getattr(self, f.name), device)
                                  for f in dataclasses.fields(self)})

    def batch(self) -> dict:
        """The fields as the interventions read them."""
        batch = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if batch["source"] is None:
            del batch["source"]
        return batch


def n_variables(kind: str, max_length: int) -> int:
    """Positions for unigram and onion interventions, bigrams (t, t+1) for the bigram one."""
    _check_kind(kind)
    return max_length - 1 if kind == "linear_bigram" else max_length


def _check_kind(kind: str) -> None:
    if kind not in INTERVENTION_KINDS:
        raise ValueError(f"unknown intervention kind {kind!r}; expected one of {INTERVENTION_KINDS}")


def step_generator(seed: int, step: int, device) -> torch.Generator:
    """A generator on `device` for step `step` of a run seeded `seed`: a pure function of both, so
    a resumed run draws what an uninterrupted one would."""
    state = np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) >> 1)


def make_counterfactuals(kind: str, target: torch.Tensor, lengths: torch.Tensor,
                         generator: torch.Generator, n_symbols: int,
                         replacement: str = "any") -> Counterfactuals:
    """Counterfactual pairs for targets y (tokens [n, T], lengths [n]), drawn with `generator` on
    its device (where `target` and `lengths` must be); `replacement` as in the module docstring."""
    _check_kind(kind)
    if replacement not in REPLACEMENTS:
        raise ValueError(f"unknown replacement {replacement!r}; expected one of {REPLACEMENTS}")
    n, width = target.shape
    device = target.device
    positions = torch.arange(width, device=device)[None, :]  # [1, T]
    valid = positions < lengths[:, None]  # [n, T]
    if replacement == "any":  # a uniformly random token, element-wise
        drawn = torch.randint(0, n_symbols, (n, width), generator=generator, device=device)
    else:  # a uniformly random token different from y's
        drawn = (target + torch.randint(1, n_symbols, (n, width), generator=generator, device=device)) % n_symbols
    other = torch.where(valid, drawn, 0)
    if kind == "linear_unigram":
        # I: each position with prob. 0.5; base differs from y on I, source differs from y off I
        changed = (torch.rand(n, width, generator=generator, device=device) < 0.5) & valid
        base = torch.where(changed, other, target)
        source = torch.where(valid & ~changed, other, target)
        return Counterfactuals(target, lengths, base, source, changed, changed.clone())
    # one position per example, uniform in [0, L)
    k = (torch.rand(n, generator=generator, device=device) * lengths).long().clamp(max=lengths - 1)
    changed = positions == k[:, None]  # [n, T]
    base = torch.where(changed, other, target)
    if kind == "linear_bigram":
        # source keeps y at k-1, k, k+1 and is random elsewhere; move bigrams (k-1, k) and (k, k+1)
        keep = ((positions - k[:, None]).abs() <= 1) & valid
        source = torch.where(keep, target, other)
        pairs = positions[:, :-1]  # bigram t = (t, t+1), [1, T-1]
        variables = (pairs == k[:, None] - 1) | ((pairs == k[:, None]) & (k[:, None] <= lengths[:, None] - 2))
        return Counterfactuals(target, lengths, base, source, changed, variables)
    # onion: corrupt position k of y; the intervention restores y's token there
    return Counterfactuals(target, lengths, base, None, changed, changed.clone())
