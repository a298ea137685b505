"""The GRU written out step by step over a folded input table, for torch.compile on the CPU.

nn.GRU on a CPU runs each gate's element-wise work as separate passes per time step; compiled as
one explicit loop, inductor fuses them. The input weights are folded into a table first: the input
of token x is (E W_ih^T + b_ih)[x], [V, 3N] computed once per call, instead of an N-wide embedding
multiplied at every step. In real arithmetic this is nn.GRU's function with nn.GRU's parameters;
tests/test_unrolled.py checks loss and gradients against the packed nn.GRU path.

Batches are padded to the sequence table's full width 2T (fixed shapes: one compilation per model
size); the teacher-forced targets of padding steps are -100, so they add nothing to the loss or
the gradients (a step never reads a later one).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from onion.log import log


def gru_states(table: torch.Tensor, inputs: torch.Tensor, h: torch.Tensor, weight_hh: torch.Tensor,
               bias_hh: torch.Tensor) -> torch.Tensor:
    """States after each step: table [V, 3N] (folded input weights), inputs [B, S] token ids,
    h [B, N] the initial state -> [B, S, N]. PyTorch's GRU: r, z, n blocks,
    h' = (1 − z) ⊙ n + z ⊙ h."""
    gi = F.embedding(inputs, table)  # [B, S, 3N]
    states = []
    for t in range(inputs.shape[1]):
        gh = torch.addmm(bias_hh, h, weight_hh.T)  # [B, 3N]
        i_r, i_z, i_n = gi[:, t].chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = n + z * (h - n)
        states.append(h)
    return torch.stack(states, dim=1)


def teacher_forced_loss(embedding: torch.Tensor, weight_ih: torch.Tensor, bias_ih: torch.Tensor,
                        weight_hh: torch.Tensor, bias_hh: torch.Tensor, readout_weight: torch.Tensor,
                        readout_bias: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of a padded batch of the sequence table (inputs, targets [B, 2T], targets
    -100 where there is no loss), from the zero state; the repeat model's parameters as tensors."""
    table = torch.addmm(bias_ih, embedding, weight_ih.T)  # [V, 3N]
    h0 = table.new_zeros(inputs.shape[0], weight_hh.shape[1])
    states = gru_states(table, inputs, h0, weight_hh, bias_hh)  # [B, 2T, N]
    logits = F.linear(states, readout_weight, readout_bias)  # [B, 2T, V]
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def model_tensors(model) -> tuple[torch.Tensor, ...]:
    """The arguments of teacher_forced_loss before the batch, from a GRU RepeatRNN."""
    if model.cell != "gru":
        raise ValueError(f"the unrolled kernel is written for the GRU, not {model.cell!r}")
    rnn = model.rnn
    return (model.embedding.weight, rnn.weight_ih_l0, rnn.bias_ih_l0, rnn.weight_hh_l0, rnn.bias_hh_l0,
            model.readout.weight, model.readout.bias)


def compiled_loss(compile: bool = True):
    """teacher_forced_loss compiled by torch.compile (fixed shapes: one compilation per model size,
    cached on disk by inductor for later jobs), or eager where compilation fails (no C++ compiler,
    say) or `compile` is False, with one log line."""
    if not compile:
        return teacher_forced_loss
    compiled = torch.compile(teacher_forced_loss, dynamic=False)
    state = {"function": compiled}

    def loss(*args) -> torch.Tensor:
        try:
            return state["function"](*args)
        except Exception as err:  # inductor raises its own error types
            if state["function"] is not compiled:
                raise
            log(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                "training with the eager unrolled loop")
            state["function"] = teacher_forced_loss
            return teacher_forced_loss(*args)

    return loss
