"""Training and evaluating probes on stored final states (PAPER.md §5), and the train_probe job.

Probes train on states read from Parquet (onion.extract), never on the model itself.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from onion.config import DataConfig, OptimConfig
from onion.data import SequenceSet
from onion.evaluation import accuracy_summary
from onion.extract import read_states
from onion.files import write_json, write_parquet
from onion.log import log
from onion.loop import apply_update, optimise
from onion.model.unrolled import use_unrolled
from onion.names import GRU_PROBE_KINDS, LR_SCHEDULES, PROBE_DECAYS
from onion.probes.modules import OnionProbe, make_probe
from onion.runtime import fingerprint, upload


@dataclasses.dataclass(frozen=True)
class ProbeConfig(OptimConfig):
    """Optimisation of a probe (authors: 60,000 steps, batch 256, AdamW lr 1e-3, wd 0.1)."""

    section: ClassVar[str] = "probes"
    lr_schedule: str = "constant"  # or "cosine": decay to 0 over `steps`
    log_every: int = 500
    weight_decay_on: str = "all"  # all parameters (authors) or "matrices" (weights and embeddings)

    def __post_init__(self):
        super().__post_init__()
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"probes.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.weight_decay_on not in PROBE_DECAYS:
            raise ValueError(f"probes.weight_decay_on must be one of {PROBE_DECAYS}, "
                             f"got {self.weight_decay_on!r}")

    def lr_at(self, step: int) -> float:
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * step / self.steps))
        return self.lr


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> np.ndarray:
    """Examples of `step`, a pure function of (seed, step) so a resumed run draws the same batches."""
    return np.random.default_rng([seed, step]).integers(0, n, size=batch_size)


def batch_index_chunks(start: int, end: int, batch_size: int, n: int, seed: int, device,
                       chunk: int = 256):
    """(step, indices [batch_size] on `device`, the same on the host) for steps start..end-1; the
    indices of `chunk` steps are drawn on the host and uploaded at once, so steps do not wait for
    a transfer."""
    for first in range(start, end, chunk):
        steps = range(first, min(first + chunk, end))
        block = np.stack([batch_indices(s, batch_size, n, seed) for s in steps])  # [chunk, B]
        yield from zip(steps, upload(torch.from_numpy(block), device), block)


def probe_batches(probe, lengths: np.ndarray, batch_size: int, seed: int, device):
    """`batches(start, end)` for onion.loop.optimise over examples with lengths [n] (on the host):
    (step, (indices [batch_size] on `device`, plan)), plan the unrolled GRU probe's packing plan
    made on the host from the stored lengths (GRUProbe.packing_plan), else None."""
    plans = getattr(probe, "unrolled_loss", None) is not None

    def batches(start: int, end: int):
        for step, idx, host in batch_index_chunks(start, end, batch_size, len(lengths), seed, device):
            yield step, (idx, probe.packing_plan(torch.from_numpy(lengths[host]), device) if plans else None)

    return batches


def make_probe_optimizer(probe: nn.Module, cfg: ProbeConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on every parameter (the authors': biases, LayerNorm gains and the
    onion scales included), or with probes.weight_decay_on = "matrices" on weight matrices and
    embeddings only."""
    if cfg.weight_decay_on == "all":
        groups = [{"params": list(probe.parameters())}]
    else:
        groups = [{"params": [p for p in probe.parameters() if p.dim() >= 2]},
                  {"params": [p for p in probe.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas))


def probe_step(probe, optimizer, h: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
               lr: float, plan=None) -> torch.Tensor:
    """One update on states h [B, N] of sequences tokens [B, T], lengths [B] (with an unrolled GRU
    probe's packing `plan`, see probe_batches); the loss, on the device."""
    loss = probe.loss(h, tokens, lengths) if plan is None else probe.loss(h, tokens, lengths, plan)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return apply_update(optimizer, loss)


def train_probe(kind: str, h: np.ndarray, data: SequenceSet, n_symbols: int, cfg: ProbeConfig,
                seed: int, device, checkpoint_path=None, stop_after: int | None = None,
                eval_every: int = 0, valid: tuple[np.ndarray, SequenceSet] | None = None,
                kernel: str = "nn"):
    """Train a probe of `kind` on states h [n, N] of sequences `data`; returns (probe, record).

    Resumes from `checkpoint_path` when it was made for the same kind, config, seed and states.
    `stop_after` ends early (as if killed, to test resumption). With `valid` and `eval_every`, the
    record's "curve" holds the held-out exact match every `eval_every` steps. `kernel` says how a
    GRU probe's GRU runs (onion.names.KERNELS).
    """
    torch.manual_seed(seed)
    max_length = data.tokens.shape[1]
    probe = make_probe(kind, h.shape[1], n_symbols, max_length).to(device)
    if kind in GRU_PROBE_KINDS and use_unrolled(kernel, device):
        probe.unroll()
    optimizer = make_probe_optimizer(probe, cfg)
    identity = {"kind": kind, "probe": dataclasses.asdict(cfg), "seed": seed, "max_length": max_length,
                "states": fingerprint(h, data.tokens, data.lengths)}
    states = torch.as_tensor(h, device=device)  # [n, N]
    tokens = torch.as_tensor(data.tokens, device=device)  # [n, L_max]
    lengths = torch.as_tensor(data.lengths, device=device)  # [n]
    history = {"curve": []}  # held-out exact match during training, kept in the checkpoint

    batches = probe_batches(probe, data.lengths, cfg.batch_size, seed, device)

    def update(step: int, batch) -> torch.Tensor:
        idx, plan = batch
        return probe_step(probe, optimizer, states[idx], tokens[idx], lengths[idx], cfg.lr_at(step), plan)

    def evaluate(done: int) -> str:
        if valid is None or not eval_every or done % eval_every:
            return ""
        accuracy = evaluate_probe(probe, *valid, device)["exact_match"]
        history["curve"].append({"step": done, "exact_match": accuracy})
        probe.train()
        return f"held-out exact match {accuracy:.3f}"

    probe.train()
    record = optimise(probe, optimizer, cfg, update, batches, key="probe", identity=identity,
                      device=device, label=f"{kind} probe step", cause="probes.lr may be too high",
                      checkpoint_path=checkpoint_path, stop_after=stop_after, after_step=evaluate,
                      extra_state=history)
    probe.eval()
    return probe, {**record, "curve": history["curve"]}


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
    rows = [(b, i, a) for b in ("position", "length") for i, a in summary[f"per_{b}"].items()]
    n = len(rows)
    return pa.table({"variant": pa.array([variant] * n, pa.string()), "cell": pa.array([cell] * n, pa.string()),
                     "size": pa.array([size] * n, pa.int32()), "seed": pa.array([seed] * n, pa.int32()),
                     "probe": pa.array([kind] * n, pa.string()),
                     "breakdown": pa.array([r[0] for r in rows], pa.string()),
                     "index": pa.array([r[1] for r in rows], pa.int16()),
                     "accuracy": pa.array([r[2] for r in rows], pa.float32())})


def run_probe(kind: str, states_path, out, breakdown_path, data: DataConfig, cfg: ProbeConfig, device,
              checkpoint=None, eval_every: int = 0, kernel: str = "nn") -> dict:
    """The train_probe job: train a `kind` probe on the stored training states, score it on the
    validation states, write its result JSON and its per-position/per-length breakdown."""
    h, train, keys = read_states(states_path, "train", data.max_length)
    h_valid, valid, _ = read_states(states_path, "valid", data.max_length)
    log(f"training the {kind} probe on {len(train)} states of {keys} on {device} "
        f"({torch.get_num_threads()} threads, kernel {kernel}): {cfg}")
    probe, record = train_probe(kind, h, train, data.n_symbols, cfg, keys["seed"], device, checkpoint,
                                eval_every=eval_every, valid=(h_valid, valid), kernel=kernel)
    metrics = evaluate_probe(probe, h_valid, valid, device)
    log(f"{kind} probe: exact match {metrics['exact_match']:.4f} on {metrics['n']} held-out states")
    extra = {"scales": onion_scales(probe)} if kind == "onion" else {}
    write_parquet(breakdown_table(metrics, kind, **keys), breakdown_path)
    write_json(out, {**keys, "kind": kind, "steps": cfg.steps, "lr": cfg.lr,
                     "lr_schedule": cfg.lr_schedule, "n_train_states": len(train),
                     "device": str(device), **metrics, "config": dataclasses.asdict(cfg),
                     "training": record, **extra})
    return metrics
