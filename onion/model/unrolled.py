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
from onion.model.rnn import ignore_padding


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


def folded_table(embedding: torch.Tensor, weight_ih: torch.Tensor, bias_ih: torch.Tensor) -> torch.Tensor:
    """The input gates' pre-activation of every token: embedding [V, N] -> [V, 3N]."""
    return torch.addmm(bias_ih, embedding, weight_ih.T)


def decode_loss(embedding: torch.Tensor, weight_ih: torch.Tensor, bias_ih: torch.Tensor,
                weight_hh: torch.Tensor, bias_hh: torch.Tensor, readout_weight: torch.Tensor,
                readout_bias: torch.Tensor, inputs: torch.Tensor, h: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of a GRU with a linear read-out run from the states h [B, N] on the token
    ids inputs [B, S], against targets [B, S] (-100 where there is no loss)."""
    states = gru_states(folded_table(embedding, weight_ih, bias_ih), inputs, h, weight_hh, bias_hh)
    logits = F.linear(states, readout_weight, readout_bias)  # [B, S, V]
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def teacher_forced_loss(embedding: torch.Tensor, weight_ih: torch.Tensor, bias_ih: torch.Tensor,
                        weight_hh: torch.Tensor, bias_hh: torch.Tensor, readout_weight: torch.Tensor,
                        readout_bias: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of a padded batch of the sequence table (inputs, targets [B, 2T], targets
    -100 where there is no loss), from the zero state; the repeat model's parameters as tensors."""
    h0 = embedding.new_zeros(inputs.shape[0], weight_hh.shape[1])
    return decode_loss(embedding, weight_ih, bias_ih, weight_hh, bias_hh, readout_weight, readout_bias,
                       inputs, h0, targets)


def final_states(embedding: torch.Tensor, weight_ih: torch.Tensor, bias_ih: torch.Tensor,
                 weight_hh: torch.Tensor, bias_hh: torch.Tensor, tokens: torch.Tensor,
                 lengths: torch.Tensor) -> torch.Tensor:
    """The state after each sequence's last token: tokens [B, T] (padded after L), lengths [B] ->
    [B, N], from the zero state (padding comes after step L - 1, so it changes nothing)."""
    h0 = embedding.new_zeros(tokens.shape[0], weight_hh.shape[1])
    states = gru_states(folded_table(embedding, weight_ih, bias_ih), tokens, h0, weight_hh, bias_hh)
    return states[torch.arange(tokens.shape[0], device=tokens.device), lengths - 1]


def model_tensors(model) -> tuple[torch.Tensor, ...]:
    """The repeat model's parameters in the order of decode_loss's, from a GRU RepeatRNN."""
    if model.cell != "gru":
        raise ValueError(f"the unrolled kernel is written for the GRU, not {model.cell!r}")
    rnn = model.rnn
    return (model.embedding.weight, rnn.weight_ih_l0, rnn.bias_ih_l0, rnn.weight_hh_l0, rnn.bias_hh_l0,
            model.readout.weight, model.readout.bias)


def use_unrolled(kernel: str, cell: str, device) -> bool:
    """Whether a job runs its GRU loops here: kernel "unrolled" (GRU only), "nn" never (torch.nn's
    GRU), "auto" for a GRU on the CPU (on CUDA, cuDNN's fused GRU is used)."""
    if kernel == "unrolled" and cell != "gru":
        raise ValueError(f"the unrolled kernel is written for the GRU, not {cell!r} (use kernel: nn or auto)")
    return kernel == "unrolled" or (kernel == "auto" and cell == "gru" and torch.device(device).type == "cpu")


def compiled(function, compile: bool = True):
    """`function` compiled by torch.compile (fixed shapes: one compilation per shape, cached on disk
    by inductor for later jobs), or eager where compilation fails (no C++ compiler, say) or `compile`
    is False, with one log line."""
    if not compile:
        return function
    fast = torch.compile(function, dynamic=False)
    state = {"function": fast}

    def run(*args) -> torch.Tensor:
        try:
            return state["function"](*args)
        except Exception as err:  # inductor raises its own error types
            if state["function"] is not fast:
                raise
            log(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                f"running {function.__name__} with the eager unrolled loop")
            state["function"] = function
            return function(*args)

    return run


def compiled_loss(compile: bool = True):
    """teacher_forced_loss, compiled (see `compiled`): the training step of train_model."""
    return compiled(teacher_forced_loss, compile)


class UnrolledRepeatModel:
    """A frozen GRU RepeatRNN's `encode` and `decode_loss` through the compiled loops: what an
    intervention's training step runs (onion.interventions.train); the nn.GRU versions are the
    model's own methods of the same names."""

    def __init__(self, model, compile: bool = True):
        self.model, self.n_symbols = model, model.n_symbols
        self.tensors = model_tensors(model)
        self._encode = compiled(final_states, compile)
        self._loss = compiled(decode_loss, compile)

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Final states [B, N] of tokens [B, T] with lengths [B]."""
        return self._encode(*self.tensors[:5], tokens, lengths)

    def decode_loss(self, state: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the teacher-forced decoder from state [B, N] on targets [B, T]."""
        return self._loss(*self.tensors, self.model.decoder_inputs(targets), state,
                          ignore_padding(targets, lengths))

