"""Linear interchange intervention (distributed alignment search, PAPER.md §4.1-4.2).

A learned orthogonal rotation R and a learned hard assignment of each rotated dimension to one causal
variable (a position or a bigram) or to "unassigned" (the last column). Intervening on a set of
variables copies their rotated dimensions from the source state into the base state.

R comes from one of two orthogonal maps (interventions.rotation): "matrix_exp", torch's
orthogonal() of a Linear weight (R = B·exp(A), A skew-symmetric, starting at 0, B the orthogonalised
initial weight), or "cayley" (CayleyRotation), the same start and an LU solve in place of the
matrix exponential and its costlier backward.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

from onion.names import ROTATIONS


def _one_hot(index: torch.Tensor, classes: int, dtype) -> torch.Tensor:
    """[N] -> [N, classes] one-hot rows, by comparison (F.one_hot may check its input on the host)."""
    return (index[:, None] == torch.arange(classes, device=index.device)).to(dtype)


class CayleyRotation(nn.Module):
    """weight = R = B (I − A)(I + A)⁻¹, orthogonal for any skew-symmetric A = (U − Uᵀ)/2, U the
    strict upper triangle of the parameter `free` [N, N] (zero at the start).

    B (a buffer) is the Q factor (diagonal of R positive) of a Linear weight as nn.Linear
    initialises it, as in torch's orthogonal(): from the same seed both maps start at the same
    random rotation B, and with A = 0 near I, far from the rotations Cayley cannot reach
    (eigenvalue −1). The factor ½ makes R = B exp(−2A) + O(A³) = B exp(Uᵀ − U) + O(A³), the matrix
    exponential's step per unit of `free`. I + A is invertible for every skew-symmetric A; the
    solve never checks for errors, so on CUDA it never waits for the device."""

    def __init__(self, size: int):
        super().__init__()
        q, r = torch.linalg.qr(nn.Linear(size, size, bias=False).weight.detach())
        self.register_buffer("base", q * r.diagonal().sign())  # B [N, N]
        self.free = nn.Parameter(torch.zeros(size, size))

    @property
    def weight(self) -> torch.Tensor:
        upper = self.free.triu(1)
        skew = 0.5 * (upper - upper.T)  # A [N, N]
        eye = torch.eye(len(skew), dtype=skew.dtype, device=skew.device)
        cayley = torch.linalg.solve_ex(eye + skew, eye - skew, check_errors=False).result  # (I+A)⁻¹(I−A)
        return self.base @ cayley  # (I+A)⁻¹ and I−A commute: the same as (I−A)(I+A)⁻¹


def make_rotation(size: int, rotation: str) -> nn.Module:
    """A module whose `weight` is a learned orthogonal [size, size] matrix (onion.names.ROTATIONS)."""
    if rotation == "matrix_exp":
        return orthogonal(nn.Linear(size, size, bias=False))
    if rotation == "cayley":
        return CayleyRotation(size)
    raise ValueError(f"interventions.rotation must be one of {ROTATIONS}, got {rotation!r}")


class LinearDAS(nn.Module):
    def __init__(self, hidden_size: int, n_variables: int, rotation: str = "matrix_exp"):
        super().__init__()
        self.hidden_size, self.n_variables = hidden_size, n_variables
        self.rotation = make_rotation(hidden_size, rotation)  # weight = R
        self.logits = nn.Parameter(0.01 * torch.randn(hidden_size, n_variables + 1))  # [N, V+1]

    def assignment(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """[N, V+1] one-hot rows: a hard Gumbel-softmax sample (temperature 1, straight-through
        gradients of the soft sample) when training, the argmax at evaluation."""
        hard = _one_hot(self.logits.argmax(-1), self.n_variables + 1, self.logits.dtype)
        if not self.training:
            return hard
        gumbel = -torch.empty_like(self.logits).exponential_(generator=generator).log()
        soft = torch.softmax(self.logits + gumbel, dim=-1)
        hard = _one_hot(soft.argmax(-1), self.n_variables + 1, soft.dtype)
        return hard - soft.detach() + soft

    def patch(self, h_base: torch.Tensor, h_source: torch.Tensor, variables: torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """h_base, h_source [B, N], variables [B, V] bool -> intervened state [B, N]."""
        assign = self.assignment(generator)[:, :self.n_variables]  # [N, V]
        take = variables.to(assign.dtype) @ assign.T  # [B, N], 1 where the dim comes from the source
        rotation = self.rotation.weight  # R [N, N], orthogonal (computed once per call)
        base, source = h_base @ rotation.T, h_source @ rotation.T  # R h, [B, N]
        mixed = base + take * (source - base)
        return mixed @ rotation  # R^T applied to each row

    def forward(self, model, batch: dict) -> torch.Tensor:
        with torch.no_grad():
            h_base = model.encode(batch["base"], batch["lengths"])
            h_source = model.encode(batch["source"], batch["lengths"])
        return self.patch(h_base, h_source, batch["variables"], batch.get("generator"))

    def regularizer(self) -> torch.Tensor:
        """Pushes dimensions towards "unassigned" (authors' 0.001 weight)."""
        return 0.001 * (self.logits[:, :-1].mean() - self.logits[:, -1].mean())

    def dims_per_variable(self) -> torch.Tensor:
        """[V+1] number of rotated dimensions assigned to each variable (last: unassigned)."""
        return torch.bincount(self.logits.argmax(-1), minlength=self.n_variables + 1)
