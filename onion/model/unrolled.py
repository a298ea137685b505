"""The recurrent cells (GRU, LSTM, tanh RNN) written out step by step over a folded input table,
for torch.compile on the CPU.

torch.nn's layers on a CPU run each gate's element-wise work as separate passes per time step;
compiled as one explicit loop, inductor fuses them. The input weights are folded into a table
first: the input of token x is (E W_ih^T + b_ih)[x], [V, G·N] (G gate blocks: 3 GRU, 4 LSTM, 1
tanh) computed once per call, instead of an N-wide embedding multiplied at every step. In real
arithmetic this is the torch.nn layer's function with its parameters; tests/test_unrolled.py checks
loss and gradients against the packed torch.nn path for each cell.

Training and the GRU probes run packed batches as nn.GRU does (examples sorted by decreasing
length, time-major; at step t only the b_t examples still running), so no step is spent on
padding: about 28 % of a padded training batch's steps at the distinct training set's mean length
(6.45 of 9). The batch sizes b_t change from batch to batch; packed_loss is compiled once with them
as symbolic sizes. The frozen model's encoder and decoder in the interventions run fixed-width
batches (one compilation per shape; -100 targets make padding add nothing to the loss or the
gradients; the linear-DAS data are all of one length). Packed interventions were measured and
lost: onion 1.03x, linear bigram DAS 0.84x at N = 64 (symbolic-size kernels and packing on the
host every step cost more than the padding saves).

precision "bf16" (opt-in: train.precision, interventions.precision) rounds the inputs of the
recurrent product h·W_hhᵀ to bfloat16 and nothing else: the state, the gate arithmetic, the folded
input table, the read-out, the weights and the optimiser stay fp32 (hidden_gates). "fp32" is the
path above, operation for operation.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from onion.log import log
from onion.model.rnn import ignore_padding
from onion.runtime import note_fallback
from onion.names import PRECISIONS


def hidden_gates(h: torch.Tensor, weight_hh: torch.Tensor, bias_hh: torch.Tensor,
                 precision: str = "fp32") -> torch.Tensor:
    """The recurrent pre-activations b_hh + h W_hhᵀ: h [B, N] -> [B, G·N], fp32. "bf16": h and
    W_hh are cast to bf16 here, at every step, so that autograd sums W_hh's gradient over the
    steps in fp32 on the fp32 weight; the product comes out in bf16 (the BLAS accumulates in fp32),
    as under autocast, and is added to the bias in fp32."""
    if precision == "bf16":
        return torch.mm(h.to(torch.bfloat16), weight_hh.to(torch.bfloat16).T).float() + bias_hh
    return torch.addmm(bias_hh, h, weight_hh.T)


def gru_update(gi: torch.Tensor, h: torch.Tensor, weight_hh: torch.Tensor, bias_hh: torch.Tensor,
               precision: str = "fp32") -> torch.Tensor:
    """One GRU step: gi [B, 3N] the input's gate pre-activations, h [B, N] -> h'. PyTorch's r, z, n
    blocks: h' = (1 − z) ⊙ n + z ⊙ h."""
    gh = hidden_gates(h, weight_hh, bias_hh, precision)  # [B, 3N]
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)


def lstm_update(gi: torch.Tensor, state: torch.Tensor, weight_hh: torch.Tensor, bias_hh: torch.Tensor,
                precision: str = "fp32") -> torch.Tensor:
    """One LSTM step: gi [B, 4N], state [B, 2N] = [h, c] (RepeatRNN's flat LSTM state) -> [h', c'].
    PyTorch's i, f, g, o blocks: c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c')."""
    h, c = state.chunk(2, dim=1)
    i, f, g, o = (gi + hidden_gates(h, weight_hh, bias_hh, precision)).chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.cat([torch.sigmoid(o) * torch.tanh(c), c], dim=1)


def tanh_update(gi: torch.Tensor, h: torch.Tensor, weight_hh: torch.Tensor, bias_hh: torch.Tensor,
                precision: str = "fp32") -> torch.Tensor:
    """One tanh RNN step: gi [B, N], h [B, N] -> tanh(gi + W_hh h + b_hh)."""
    return torch.tanh(gi + hidden_gates(h, weight_hh, bias_hh, precision))


CELL_UPDATES = {"gru": gru_update, "lstm": lstm_update, "rnn_tanh": tanh_update}  # one step of each cell


def cell_states(cell: str, table: torch.Tensor, inputs: torch.Tensor, state: torch.Tensor,
                weight_hh: torch.Tensor, bias_hh: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """States after each step: table [V, G·N] (folded input weights; G gate blocks), inputs [B, S]
    token ids, state [B, state_size] the initial state -> [B, S, state_size] (the LSTM's: [h, c])."""
    update = CELL_UPDATES[cell]
    gi = F.embedding(inputs, table)  # [B, S, G·N]
    states = []
    for t in range(inputs.shape[1]):
        state = update(gi[:, t], state, weight_hh, bias_hh, precision)
        states.append(state)
    return torch.stack(states, dim=1)


def folded_table(embedding: torch.Tensor, weight_ih: torch.Tensor, bias_ih: torch.Tensor) -> torch.Tensor:
    """The input gates' pre-activation of every token: embedding [V, N] -> [V, G·N]."""
    return torch.addmm(bias_ih, embedding, weight_ih.T)


def decode_loss(cell: str, embedding: torch.Tensor, weight_ih: torch.Tensor, bias_ih: torch.Tensor,
                weight_hh: torch.Tensor, bias_hh: torch.Tensor, readout_weight: torch.Tensor,
                readout_bias: torch.Tensor, inputs: torch.Tensor, state: torch.Tensor,
                targets: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """Mean cross-entropy of a recurrent layer with a linear read-out of h, run from the states
    state [B, state_size] on the token ids inputs [B, S], against targets [B, S] (-100 where there
    is no loss)."""
    states = cell_states(cell, folded_table(embedding, weight_ih, bias_ih), inputs, state, weight_hh, bias_hh,
                         precision)
    logits = F.linear(states[..., :weight_hh.shape[1]], readout_weight, readout_bias)  # [B, S, V] from h
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def packed_loss(cell: str, embedding: torch.Tensor, weight_ih: torch.Tensor, bias_ih: torch.Tensor,
                weight_hh: torch.Tensor, bias_hh: torch.Tensor, readout_weight: torch.Tensor,
                readout_bias: torch.Tensor, inputs: torch.Tensor, state: torch.Tensor, targets: torch.Tensor,
                batch_sizes: list[int], precision: str = "fp32") -> torch.Tensor:
    """Mean cross-entropy of a recurrent layer with a linear read-out of h on a packed batch, as
    torch.nn computes it on a PackedSequence (onion.training.packed_batch_loss): inputs, targets
    [sum L] time-major (onion.model.rnn.packing; targets -100 where there is no loss), state
    [B, state_size] the examples' initial states longest first, batch_sizes [max L] Python ints,
    non-increasing (step t runs the first b_t examples)."""
    update = CELL_UPDATES[cell]
    gi = F.embedding(inputs, folded_table(embedding, weight_ih, bias_ih))  # [sum L, G·N]
    states, offset = [], 0
    for size in batch_sizes:
        state = update(gi[offset:offset + size], state[:size], weight_hh, bias_hh, precision)  # [b_t, state_size]
        states.append(state)
        offset += size
    hidden = torch.cat(states)[:, :weight_hh.shape[1]]  # [sum L, N]: h (the LSTM's [h, c] without c)
    return F.cross_entropy(F.linear(hidden, readout_weight, readout_bias), targets, ignore_index=-100)


def _zero_state(cell: str, batch: int, weight_hh: torch.Tensor) -> torch.Tensor:
    """The zero initial state [B, state_size]."""
    return weight_hh.new_zeros(batch, weight_hh.shape[1] * (2 if cell == "lstm" else 1))


def final_states(cell: str, embedding: torch.Tensor, weight_ih: torch.Tensor, bias_ih: torch.Tensor,
                 weight_hh: torch.Tensor, bias_hh: torch.Tensor, tokens: torch.Tensor,
                 lengths: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """The state after each sequence's last token: tokens [B, T] (padded after L), lengths [B] ->
    [B, state_size], from the zero state (padding comes after step L - 1, so it changes nothing)."""
    states = cell_states(cell, folded_table(embedding, weight_ih, bias_ih), tokens,
                         _zero_state(cell, tokens.shape[0], weight_hh), weight_hh, bias_hh, precision)
    return states[torch.arange(tokens.shape[0], device=tokens.device), lengths - 1]


def model_tensors(model) -> tuple[torch.Tensor, ...]:
    """The repeat model's parameters in the order of decode_loss's (after the cell's name)."""
    rnn = model.rnn
    return (model.embedding.weight, rnn.weight_ih_l0, rnn.bias_ih_l0, rnn.weight_hh_l0, rnn.bias_hh_l0,
            model.readout.weight, model.readout.bias)


def use_unrolled(kernel: str, device) -> bool:
    """Whether a job runs its recurrent loops here: kernel "unrolled" always, "nn" never (torch.nn's
    layers), "auto" on a CPU (on CUDA, cuDNN's fused layers). On a CPU the packed unrolled loop
    trains 1.7-2.0x faster than torch.nn for each cell (docs/performance.md)."""
    return kernel == "unrolled" or (kernel == "auto" and torch.device(device).type == "cpu")


def check_precision(precision: str, kernel: str, device, setting: str) -> None:
    """Stop a job whose `setting` (train.precision, say) asks for bf16 where its loops would run
    torch.nn's layers (use_unrolled), which only run fp32: never fp32 in bf16's name."""
    if precision not in PRECISIONS:
        raise ValueError(f"{setting} must be one of {PRECISIONS}, got {precision!r}")
    if precision != "fp32" and not use_unrolled(kernel, device):
        raise ValueError(f"{setting}: {precision} runs only in the unrolled kernel, but kernel {kernel} "
                         f"on {torch.device(device).type} runs torch.nn's layers in fp32 "
                         f"(set kernel: unrolled, or {setting}: fp32)")


def compiled(function, compile: bool = True, dynamic: bool = False):
    """`function` compiled by torch.compile, or eager where compilation fails (no C++ compiler, say)
    or `compile` is False, with one log line. dynamic=False: fixed shapes, one compilation per shape;
    dynamic=True: sizes (and int arguments) symbolic, one compilation for all of them. Inductor
    caches compilations on disk for later jobs."""
    if not compile:
        return function
    fast = torch.compile(function, dynamic=dynamic)
    state = {"function": fast}

    def run(*args) -> torch.Tensor:
        try:
            return state["function"](*args)
        except Exception as err:  # inductor raises its own error types
            if state["function"] is not fast:
                raise
            reason = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
            log(f"torch.compile failed ({reason}); running {function.__name__} with the eager unrolled loop")
            note_fallback(f"{function.__name__}: {reason}")  # gpu-check reports which kernel ran
            state["function"] = function
            return function(*args)

    return run


def compiled_loss(compile: bool = True):
    """packed_loss, compiled with symbolic batch sizes (see `compiled`): the training step of
    train_model (called with the cell's name first)."""
    return compiled(packed_loss, compile, dynamic=True)


class UnrolledRepeatModel:
    """A frozen RepeatRNN's `encode` and `decode_loss` through the compiled loops: what an
    intervention's training step runs (onion.interventions.train); the torch.nn versions are the
    model's own methods of the same names. `precision`: the recurrent product's (hidden_gates)."""

    def __init__(self, model, compile: bool = True, precision: str = "fp32"):
        self.model, self.n_symbols, self.cell = model, model.n_symbols, model.cell
        self.tensors, self.precision = model_tensors(model), precision
        self._encode = compiled(final_states, compile)
        self._loss = compiled(decode_loss, compile)

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Final states [B, state_size] of tokens [B, T] with lengths [B]."""
        return self._encode(self.cell, *self.tensors[:5], tokens, lengths, self.precision)

    def decode_loss(self, state: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the teacher-forced decoder from state [B, state_size] on targets [B, T]."""
        return self._loss(self.cell, *self.tensors, self.model.decoder_inputs(targets), state,
                          ignore_padding(targets, lengths), self.precision)


def frozen_runner(model, kernel: str, device, precision: str = "fp32"):
    """What runs a frozen model's `encode` and `decode_loss` in an analysis: its
    UnrolledRepeatModel where `kernel` says so on `device` (use_unrolled), else the model itself.
    bf16 `precision` (interventions.precision) needs the former."""
    check_precision(precision, kernel, device, "interventions.precision")
    return UnrolledRepeatModel(model, precision=precision) if use_unrolled(kernel, device) else model
