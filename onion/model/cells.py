"""The recurrent cells a repeat model can use, and one step of each written out from its weights.

The layers themselves are torch.nn's (library kernels on CPU and CUDA); `cell_step` recomputes a
step from the layer's own weights to expose the gates (onion.extract, Fig. 2).
"""

from __future__ import annotations

import torch
from torch import nn

from onion.names import CELLS

# what a step of each cell exposes, in the trajectories' column order
GATES = {"gru": ("h", "z", "r", "n"), "lstm": ("h", "c", "i", "f", "g", "o"), "rnn_tanh": ("h",)}


def make_cell(cell: str, size: int) -> nn.Module:
    """One batch-first recurrent layer of `size` units from torch.nn."""
    if cell == "gru":
        return nn.GRU(size, size, batch_first=True)
    if cell == "lstm":
        return nn.LSTM(size, size, batch_first=True)
    if cell == "rnn_tanh":
        return nn.RNN(size, size, nonlinearity="tanh", batch_first=True)
    raise ValueError(f"unknown cell {cell!r}; expected one of {CELLS}")


def gru_step(gru: torch.nn.GRU, x: torch.Tensor, h: torch.Tensor):
    """One GRU step from the layer's own weights: x [B, N_in], h [B, N] -> (h', r, z, n), each [B, N].

    r = σ(W_ir x + b_ir + W_hr h + b_hr), z = σ(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h.
    """
    gi = x @ gru.weight_ih_l0.T + gru.bias_ih_l0  # [B, 3N], blocks r, z, n
    gh = h @ gru.weight_hh_l0.T + gru.bias_hh_l0  # [B, 3N]
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h, r, z, n


def cell_step(model, x: torch.Tensor, state: dict) -> dict:
    """One step of the model's cell from its own weights: x [B, N], state {"h"[, "c"]} -> every
    column of GATES[model.cell], each [B, N]."""
    layer = model.rnn
    if model.cell == "gru":
        h, r, z, n = gru_step(layer, x, state["h"])
        return {"h": h, "z": z, "r": r, "n": n}
    pre = x @ layer.weight_ih_l0.T + layer.bias_ih_l0 + state["h"] @ layer.weight_hh_l0.T + layer.bias_hh_l0
    if model.cell == "rnn_tanh":
        return {"h": torch.tanh(pre)}
    i, f, g, o = pre.chunk(4, dim=1)  # PyTorch's LSTM order
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * state["c"] + i * g
    return {"h": o * torch.tanh(c), "c": c, "i": i, "f": f, "g": g, "o": o}
