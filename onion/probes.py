"""Probes that read the stored sequence back from the final state h_L (PAPER.md §5).

Probes train on states read from Parquet (onion.extract), never on the model itself. Each probe
maps h [B, N] to the L_max output tokens: `loss(h, tokens, lengths)` (teacher-forced where the
probe is autoregressive) and `predict(h) -> [B, L_max]` (greedy). Only the first L tokens count.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from onion.data import SequenceSet
from onion.evaluation import accuracy_summary
from onion.runtime import Progress, fingerprint, resume, save_checkpoint, synchronize

KINDS = ("linear", "mlp", "onion", "gru_autoregressive", "gru_no_input")


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Optimisation of a probe (authors: 60,000 steps, batch 256, AdamW lr 1e-3, wd 0.1)."""

    steps: int = 60_000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "constant"  # or "cosine": decay to 0 over `steps`
    checkpoint_every: int = 2_000
    log_every: int = 500

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("probes.steps and probes.batch_size must be positive")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"probes.lr_schedule must be constant or cosine, got {self.lr_schedule!r}")

    def lr_at(self, step: int) -> float:
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * step / self.steps))
        return self.lr


def masked_ce(logits: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the first L positions: logits [B, T, S], tokens [B, T], lengths [B]."""
    from onion.training import sequence_loss
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

    C = LayerNorm -> Linear(N, N) -> ReLU -> Linear(N, S); s_t = g·γ^t + β·t + b per channel,
    initialised γ = 0.9, β = 0.1, g = 1, b = 0; E [S, N] learned. Training subtracts the true token.
    """

    def __init__(self, hidden_size: int, n_symbols: int, max_length: int):
        super().__init__()
        self.max_length = max_length
        self.classifier = nn.Sequential(nn.LayerNorm(hidden_size, eps=1e-12), nn.Linear(hidden_size, hidden_size),
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

    def _inputs(self, h, tokens):
        # [B, L_max, N]: SOS, y_0, ..., y_{L_max-2}; or zeros
        if not self.autoregressive:
            return h.new_zeros(h.shape[0], self.max_length, h.shape[1])
        sos = torch.full_like(tokens[:, :1], self.n_symbols)
        return self.embedding(torch.cat([sos, tokens[:, :self.max_length - 1]], 1))

    def loss(self, h, tokens, lengths):
        tokens = tokens[:, :self.max_length]
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
    if kind in ("gru_autoregressive", "gru_no_input"):
        return GRUProbe(hidden_size, n_symbols, max_length, autoregressive=kind == "gru_autoregressive")
    raise ValueError(f"unknown probe kind {kind!r}; expected one of {KINDS}")


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> np.ndarray:
    """Examples of `step`, a pure function of (seed, step) so a resumed run draws the same batches."""
    return np.random.default_rng([seed, step]).integers(0, n, size=batch_size)


def batch_index_chunks(start: int, end: int, batch_size: int, n: int, seed: int, device,
                       chunk: int = 256):
    """(step, indices [batch_size] on `device`) for steps start..end-1; the indices of `chunk`
    steps are drawn on the host and uploaded at once, so steps do not wait for a transfer."""
    for first in range(start, end, chunk):
        steps = range(first, min(first + chunk, end))
        block = np.stack([batch_indices(s, batch_size, n, seed) for s in steps])  # [chunk, B]
        block = torch.from_numpy(block).to(device, non_blocking=True)
        yield from zip(steps, block)


def make_probe_optimizer(probe: nn.Module, cfg: ProbeConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices and embeddings only, not on biases, gains and the
    onion scales."""
    decay = [p for p in probe.parameters() if p.dim() >= 2]
    no_decay = [p for p in probe.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas))


def probe_step(probe, optimizer, h: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
               lr: float) -> torch.Tensor:
    """One update on states h [B, N] of sequences tokens [B, T], lengths [B]; the loss, on the device."""
    loss = probe.loss(h, tokens, lengths)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_probe(kind: str, h: np.ndarray, data: SequenceSet, n_symbols: int, cfg: ProbeConfig,
                seed: int, device, checkpoint_path=None, stop_after: int | None = None,
                eval_every: int = 0, valid: tuple[np.ndarray, SequenceSet] | None = None):
    """Train a probe of `kind` on states h [n, N] of sequences `data`; returns (probe, record).

    Resumes from `checkpoint_path` when it was made for the same kind, config, seed and data size.
    `stop_after` ends early (as if killed, to test resumption). With `valid` and `eval_every`, the
    record's "curve" holds the held-out exact match every `eval_every` steps.
    """
    torch.manual_seed(seed)
    max_length = data.tokens.shape[1]
    probe = make_probe(kind, h.shape[1], n_symbols, max_length).to(device)
    optimizer = make_probe_optimizer(probe, cfg)
    identity = {"kind": kind, "probe": dataclasses.asdict(cfg), "seed": seed, "max_length": max_length,
                "states": fingerprint(h, data.tokens, data.lengths)}
    state = resume(checkpoint_path, identity, device, probe, optimizer, "probe", cfg.steps)
    start, curve = (state["step"], state["curve"]) if state else (0, [])
    states = torch.as_tensor(h, device=device)  # [n, N]
    tokens = torch.as_tensor(data.tokens, device=device)  # [n, L_max]
    lengths = torch.as_tensor(data.lengths, device=device)  # [n]
    progress = Progress(cfg.steps, start=start, every=cfg.log_every, label=f"{kind} probe step",
                        cause="probes.lr may be too high")
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    began = time.perf_counter()
    probe.train()
    for step, idx in batch_index_chunks(start, end, cfg.batch_size, len(data), seed, device):
        loss = probe_step(probe, optimizer, states[idx], tokens[idx], lengths[idx], cfg.lr_at(step))
        done, extra = step + 1, ""
        if valid is not None and eval_every and done % eval_every == 0:
            acc = evaluate_probe(probe, *valid, device)["exact_match"]
            curve.append({"step": done, "exact_match": acc})
            extra = f"held-out exact match {acc:.3f}"
            probe.train()
        progress.update(done, loss, extra)
        # the last step is checkpointed too: a group job retried whole (profiles/slurm) then
        # finishes this analysis at once instead of starting it over
        if checkpoint_path and ((cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
                                or done == cfg.steps):
            progress.check(done)  # never checkpoint a diverged probe
            save_checkpoint(checkpoint_path, {"identity": identity, "step": done, "curve": curve,
                                              "probe": probe.state_dict(),
                                              "optimizer": optimizer.state_dict()})
    synchronize(device)  # the clock counts the queued GPU work too
    seconds = time.perf_counter() - began
    probe.eval()
    return probe, {"steps": cfg.steps, "resumed_from": start, "steps_this_run": end - start,
                   "seconds_this_run": seconds, "finished": end == cfg.steps, "curve": curve,
                   "final_loss": float(loss) if end > start else None}


@torch.no_grad()
def predict_probe(probe, h: np.ndarray, device, batch_size: int = 4096) -> np.ndarray:
    """Greedy probe outputs [n, L_max]."""
    probe.eval()
    out = [probe.predict(torch.as_tensor(h[i:i + batch_size], device=device)).cpu().numpy()
           for i in range(0, len(h), batch_size)]
    return np.concatenate(out)


def evaluate_probe(probe, h: np.ndarray, data: SequenceSet, device) -> dict:
    """Exact match overall, per position and per length on held-out states."""
    return accuracy_summary(predict_probe(probe, h, device), data.tokens, data.lengths)


def onion_scales(probe: OnionProbe) -> dict:
    """The learned per-channel parameters and s_t, as lists (JSON-ready)."""
    with torch.no_grad():
        return {"g": probe.g.cpu().tolist(), "gamma": probe.gamma.cpu().tolist(),
                "beta": probe.beta.cpu().tolist(), "b": probe.b.cpu().tolist(),
                "s": probe.scales().cpu().tolist()}  # [L_max][N]


def breakdown_table(summary: dict, kind: str, variant: str, size: int, seed: int, cell: str = "gru"):
    """Per-position token accuracy and per-length exact match as a long Parquet-ready table:
    columns variant, cell, size, seed, probe, breakdown ("position" | "length"), index, accuracy."""
    import pyarrow as pa
    rows = [(b, i, a) for b in ("position", "length") for i, a in summary[f"per_{b}"].items()]
    n = len(rows)
    return pa.table({"variant": pa.array([variant] * n, pa.string()), "cell": pa.array([cell] * n, pa.string()),
                     "size": pa.array([size] * n, pa.int32()), "seed": pa.array([seed] * n, pa.int32()),
                     "probe": pa.array([kind] * n, pa.string()),
                     "breakdown": pa.array([r[0] for r in rows], pa.string()),
                     "index": pa.array([r[1] for r in rows], pa.int16()),
                     "accuracy": pa.array([r[2] for r in rows], pa.float32())})
