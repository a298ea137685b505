"""The onion intervention (PAPER.md §4.3): replace token a by c at position j by adding a scaled
difference of learned embeddings, h' = h + s_j ⊙ (tanh(E[c]) − tanh(E[a])),
with the per-channel scale s_j = g·γ^j + β·j + b.

The control fixes γ = 1 and β = 0: a scale that does not depend on the position.
"""

from __future__ import annotations

import torch
from torch import nn


class OnionIntervention(nn.Module):
    def __init__(self, n_symbols: int, hidden_size: int, control: bool = False):
        super().__init__()
        self.control = control
        self.embedding = nn.Parameter(torch.randn(n_symbols, hidden_size))  # E, [S, N]
        self.g = nn.Parameter(torch.ones(hidden_size))
        self.b = nn.Parameter(torch.zeros(hidden_size))
        if control:
            self.register_buffer("gamma", torch.ones(hidden_size))
            self.register_buffer("beta", torch.zeros(hidden_size))
        else:
            self.gamma = nn.Parameter(torch.full((hidden_size,), 0.9))
            self.beta = nn.Parameter(torch.ones(hidden_size))

    def scales(self, positions: torch.Tensor) -> torch.Tensor:
        """s_j for positions [B] (0-indexed) -> [B, N]."""
        j = positions.to(self.g.dtype)[:, None]  # [B, 1]
        return self.g * self.gamma ** j + self.beta * j + self.b

    def patch(self, h: torch.Tensor, positions: torch.Tensor, old: torch.Tensor, new: torch.Tensor):
        """h [B, N]; replace token old [B] by new [B] at positions [B] -> [B, N]."""
        delta = torch.tanh(self.embedding[new]) - torch.tanh(self.embedding[old])  # [B, N]
        return h + self.scales(positions) * delta

    def forward(self, model, batch: dict) -> torch.Tensor:
        with torch.no_grad():
            h = model.encode(batch["base"], batch["lengths"])
        position = batch["changed"].long().argmax(1)  # [B], exactly one changed position per row
        old = batch["base"].gather(1, position[:, None])[:, 0]
        new = batch["target"].gather(1, position[:, None])[:, 0]
        return self.patch(h, position, old, new)

    def regularizer(self) -> torch.Tensor:
        return self.g.new_zeros(())
