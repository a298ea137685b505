"""The probes (PAPER.md §5): each maps a final state h [B, N] to the L_max output tokens.

`loss(h, tokens, lengths)` is teacher-forced where the probe is autoregressive, `predict(h) ->
[B, L_max]` greedy; only the first L tokens count.
"""

from __future__ import annotations

import torch
from torch import nn

from onion.names import GRU_PROBE_KINDS, PROBE_KINDS
from onion.model import sequence_loss
from onion.model.rnn import packing
from onion.model.unrolled import compiled, packed_loss
from onion.runtime import upload


def masked_ce(logits: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the first L positions: logits [B, T, S], tokens [B, T], lengths [B]."""
    return sequence_loss(logits, tokens, lengths)


class FlatProbe(nn.Module):
    """All positions at once: h [B, N] -> logits [B, L_max, S]. Linear, or an MLP with one hidden layer."""

    def __init__(self, hidden_size: int, n_symbols: int, max_length: int, mlp: bool = False):
        super().__init__()
        self.n_symbols, self.max_length = n_symbols, max_length
        out = n_symbols * max_length
        self.net = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU(),
                                 nn.Linear(hidden_size, out)) if mlp else nn.Linear(hidden_size, out)

    def logits(self, h):
        return self.net(h).view(h.shape[0], self.max_length, self.n_symbols)

    def loss(self, h, tokens, lengths):
        return masked_ce(self.logits(h), tokens, lengths)

    def predict(self, h):
        return self.logits(h).argmax(-1)


class OnionProbe(nn.Module):
    """Autoregressive peeling: read y_t = argmax C(h), then h <- h - s_t ⊙ E[y_t].

    C = LayerNorm (eps 1e-5, the authors') -> Linear(N, N) -> ReLU -> Linear(N, S);
    s_t = g·γ^t + β·t + b per channel, initialised γ = 0.9, β = 0.1, g = 1, b = 0; E [S, N] learned.
    Training subtracts the true token.
    """

    def __init__(self, hidden_size: int, n_symbols: int, max_length: int):
        super().__init__()
        self.max_length = max_length
        self.classifier = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, hidden_size),
                                        nn.ReLU(), nn.Linear(hidden_size, n_symbols))
        self.embedding = nn.Embedding(n_symbols, hidden_size)
        self.g = nn.Parameter(torch.ones(hidden_size))
        self.gamma = nn.Parameter(torch.full((hidden_size,), 0.9))
        self.beta = nn.Parameter(torch.full((hidden_size,), 0.1))
        self.b = nn.Parameter(torch.zeros(hidden_size))

    def scales(self) -> torch.Tensor:
        """s_t for t = 0..L_max-1: [L_max, N]."""
        t = torch.arange(self.max_length, device=self.g.device, dtype=self.g.dtype)[:, None]
        return self.g * self.gamma ** t + self.beta * t + self.b

    def run(self, h, tokens=None):
        """Logits [B, L_max, S]; subtracts `tokens` [B, L_max] when given, else the predictions."""
        scales, logits = self.scales(), []
        if tokens is not None:  # teacher forcing: every step's residual at once, one classifier call
            peeled = scales * self.embedding(tokens)  # [B, L_max, N]: s_t ⊙ E[y_t]
            before = torch.cat([torch.zeros_like(peeled[:, :1]), peeled[:, :-1].cumsum(1)], 1)  # Σ_{k<t}
            return self.classifier(h[:, None] - before)  # [B, L_max, S]
        for t in range(self.max_length):
            step = self.classifier(h)  # [B, S]
            logits.append(step)
            h = h - scales[t] * self.embedding(step.argmax(-1))
        return torch.stack(logits, 1)

    def loss(self, h, tokens, lengths):
        return masked_ce(self.run(h, tokens[:, :self.max_length]), tokens, lengths)

    def predict(self, h):
        return self.run(h).argmax(-1)


class GRUProbe(nn.Module):
    """A fresh decoder: GRU(N, N) started from h_L, linear read-out.

    autoregressive: inputs are embeddings of SOS then the previous token (teacher forcing in
    training, greedy outputs at prediction); otherwise every input is the zero vector.
    """

    def __init__(self, hidden_size: int, n_symbols: int, max_length: int, autoregressive: bool):
        super().__init__()
        self.n_symbols, self.max_length, self.autoregressive = n_symbols, max_length, autoregressive
        self.embedding = nn.Embedding(n_symbols + 1, hidden_size)  # id n_symbols = SOS
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.readout = nn.Linear(hidden_size, n_symbols)
        self.unrolled_loss = None  # set by unroll()

    def unroll(self, compile: bool = True) -> None:
        """Train through onion.model.unrolled's compiled loop on packed batches (no steps past an
        example's length): the same loss and gradients as nn.GRU's, fused into fewer passes on a CPU."""
        self.unrolled_loss = compiled(packed_loss, compile, dynamic=True)

    def _unrolled_inputs(self, h, tokens):
        # the input table's rows and the token ids [B, L_max] that pick them (a zero row: no input)
        if not self.autoregressive:
            return h.new_zeros(1, h.shape[1]), torch.zeros_like(tokens)
        sos = torch.full_like(tokens[:, :1], self.n_symbols)
        return self.embedding.weight, torch.cat([sos, tokens[:, :self.max_length - 1]], 1)

    def _inputs(self, h, tokens):
        # [B, L_max, N]: SOS, y_0, ..., y_{L_max-2}; or zeros
        if not self.autoregressive:
            return h.new_zeros(h.shape[0], self.max_length, h.shape[1])
        sos = torch.full_like(tokens[:, :1], self.n_symbols)
        return self.embedding(torch.cat([sos, tokens[:, :self.max_length - 1]], 1))

    def packing_plan(self, lengths: torch.Tensor, device, width: int | None = None):
        """The packed layout of a batch of examples with lengths [B] (on the CPU), made on the host
        and uploaded to `device` without waiting: (order [B], the examples longest first; flat
        [sum L], time-major positions into the flattened [B, width] tokens, width L_max unless
        given; batch_sizes, ints)."""
        order, slot, t, batch_sizes = packing(lengths)
        flat = order[slot] * (width or self.max_length) + t
        return upload(order, device), upload(flat, device), batch_sizes.tolist()

    def loss(self, h, tokens, lengths, plan=None):
        """`plan`: packing_plan of `lengths`, needed by the unrolled kernel; without it the plan is
        made here from lengths read back to the host (on a GPU, a wait)."""
        tokens = tokens[:, :self.max_length]
        if self.unrolled_loss is not None:
            if plan is None:
                plan = self.packing_plan(lengths.cpu(), h.device, tokens.shape[1])
            elif tokens.shape[1] != self.max_length:
                raise ValueError(f"GRU probe: a plan for tokens of width {self.max_length}, not {tokens.shape[1]}")
            table, ids = self._unrolled_inputs(h, tokens)
            order, flat, batch_sizes = plan
            gru = self.gru
            return self.unrolled_loss("gru", table, gru.weight_ih_l0, gru.bias_ih_l0, gru.weight_hh_l0, gru.bias_hh_l0,
                                      self.readout.weight, self.readout.bias, ids.flatten()[flat],
                                      h[order], tokens.flatten()[flat], batch_sizes)
        states, _ = self.gru(self._inputs(h, tokens), h[None].contiguous())
        return masked_ce(self.readout(states), tokens, lengths)

    def predict(self, h):
        if not self.autoregressive:
            states, _ = self.gru(self._inputs(h, None), h[None].contiguous())
            return self.readout(states).argmax(-1)
        state, outputs = h[None].contiguous(), []
        token = torch.full((h.shape[0], 1), self.n_symbols, dtype=torch.long, device=h.device)
        for _ in range(self.max_length):
            out, state = self.gru(self.embedding(token), state)
            token = self.readout(out).argmax(-1)  # [B, 1]
            outputs.append(token)
        return torch.cat(outputs, 1)


def make_probe(kind: str, hidden_size: int, n_symbols: int, max_length: int) -> nn.Module:
    if kind == "linear":
        return FlatProbe(hidden_size, n_symbols, max_length)
    if kind == "mlp":
        return FlatProbe(hidden_size, n_symbols, max_length, mlp=True)
    if kind == "onion":
        return OnionProbe(hidden_size, n_symbols, max_length)
    if kind in GRU_PROBE_KINDS:
        return GRUProbe(hidden_size, n_symbols, max_length, autoregressive=kind == "gru_autoregressive")
    raise ValueError(f"unknown probe kind {kind!r}; expected one of {PROBE_KINDS}")
