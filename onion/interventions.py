"""Training and evaluating interventions on a frozen repeat model (PAPER.md §4).

The model is never updated: each step encodes counterfactual sequences, intervenes on the final
state, and trains the intervention on the cross-entropy of decoding the counterfactual target
with teacher forcing. Evaluation is exact match of greedy decoding from the intervened state.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pyarrow as pa
import torch

from onion.counterfactuals import (KINDS, Counterfactuals, make_counterfactuals, n_variables,
                                   step_generator)
from onion.das import LinearDAS
from onion.data import SequenceSet
from onion.evaluation import accuracy_summary
from onion.onion_intervention import OnionIntervention
from onion.runtime import Progress, fingerprint, resume, save_checkpoint, synchronize
from onion.training import make_optimizer, sequence_loss


@dataclasses.dataclass(frozen=True)
class InterventionConfig:
    """Optimisation of one intervention (authors: 60,000 steps, batch 256, AdamW lr 1e-3, wd 0.1)."""

    steps: int = 60_000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    checkpoint_every: int = 2_000
    log_every: int = 1_000

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("interventions.steps and interventions.batch_size must be positive")


def make_intervention(kind: str, n_symbols: int, hidden_size: int, max_length: int) -> torch.nn.Module:
    if kind in ("linear_unigram", "linear_bigram"):
        return LinearDAS(hidden_size, n_variables(kind, max_length))
    if kind in ("onion", "onion_control"):
        return OnionIntervention(n_symbols, hidden_size, control=kind == "onion_control")
    raise ValueError(f"unknown intervention kind {kind!r}; expected one of {KINDS}")


def targets_for(kind: str, data: SequenceSet, das_length: int | None) -> SequenceSet:
    """The target sequences an intervention trains on: linear DAS only those of length `das_length`
    (the authors' code: 9; None = all), the onion kinds all of them."""
    if kind.startswith("linear") and das_length is not None:
        keep = data.lengths == das_length
        if not keep.any():
            raise ValueError(f"no sequences of length {das_length} (data.das_length)")
        return SequenceSet(data.tokens[keep], data.lengths[keep])
    return data


def _freeze(model) -> dict:
    for p in model.parameters():
        p.requires_grad_(False)
    return {k: v.clone() for k, v in model.state_dict().items()}


def intervention_step(model, intervention, optimizer, kind: str, tokens: torch.Tensor,
                      lengths: torch.Tensor, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """One update of `intervention` on targets tokens [n, T], lengths [n] (on the device). Batch,
    counterfactuals and Gumbel noise are drawn on the device, a pure function of (seed, step).
    Returns the loss, still on the device."""
    generator = step_generator(seed, step, tokens.device)
    idx = torch.randint(len(tokens), (batch_size,), generator=generator, device=tokens.device)
    batch = make_counterfactuals(kind, tokens[idx], lengths[idx], generator, model.n_symbols).batch()
    batch["generator"] = generator
    h = intervention(model, batch)  # [B, N]
    logits = model.decode(h, model.decoder_inputs(batch["target"]))  # [B, T, V]
    loss = sequence_loss(logits, batch["target"], batch["lengths"]) + intervention.regularizer()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_intervention(model, kind: str, train: SequenceSet, cfg: InterventionConfig, seed: int,
                       device, max_length: int, checkpoint_path=None,
                       stop_after: int | None = None,
                       das_length: int | None = None) -> tuple[torch.nn.Module, dict]:
    """Train a `kind` intervention on the frozen `model`; resumes from `checkpoint_path` when it
    matches. Linear DAS trains on the length-`das_length` targets of `train` only (None = all).
    Batch i is a pure function of (seed, i). Returns (intervention, training record)."""
    model.to(device)
    before = _freeze(model)
    targets = targets_for(kind, train, das_length)
    torch.manual_seed(seed)
    intervention = make_intervention(kind, model.n_symbols, model.state_size, max_length).to(device)
    optimizer = make_optimizer(intervention.parameters(), cfg)
    identity = {"kind": kind, "config": dataclasses.asdict(cfg), "seed": seed, "max_length": max_length,
                "model": getattr(model, "hyperparameters", lambda: type(model).__name__)(),
                "model weights": fingerprint(*before.values()),
                "training targets": fingerprint(targets.tokens, targets.lengths)}
    state = resume(checkpoint_path, identity, device, intervention, optimizer, "intervention", cfg.steps)
    start = state["step"] if state else 0
    # cuDNN's GRU backward needs train mode; the repeat models have no dropout, so it changes nothing
    model.train()
    intervention.train()
    tokens = torch.as_tensor(targets.tokens, device=device)  # [n, T], on the device once
    lengths = torch.as_tensor(targets.lengths, device=device)  # [n]
    progress = Progress(cfg.steps, start=start, every=cfg.log_every, label=f"{kind} intervention step",
                        cause="interventions.lr may be too high")
    began, end = time.perf_counter(), cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    loss = None
    for step in range(start, end):
        loss = intervention_step(model, intervention, optimizer, kind, tokens, lengths,
                                 cfg.batch_size, seed, step)
        done = step + 1
        progress.update(done, loss)
        # the last step is checkpointed too: a group job retried whole (profiles/slurm) then
        # finishes this analysis at once instead of starting it over
        if checkpoint_path and ((cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
                                or done == cfg.steps):
            progress.check(done)  # never checkpoint a diverged intervention
            save_checkpoint(checkpoint_path, {"identity": identity, "step": done,
                                              "intervention": intervention.state_dict(),
                                              "optimizer": optimizer.state_dict()})
    model.eval()
    intervention.eval()
    after = model.state_dict()
    if any(not torch.equal(before[k], after[k]) for k in before):
        raise RuntimeError("the frozen model changed while training an intervention")
    synchronize(device)  # the clock counts the queued GPU work too
    seconds = time.perf_counter() - began
    return intervention, {"steps": cfg.steps, "resumed_from": start, "steps_this_run": end - start,
                          "seconds_this_run": seconds,
                          "steps_per_second": (end - start) / max(seconds, 1e-9),
                          "final_loss": float(loss.detach()) if loss is not None else None,
                          "finished": end == cfg.steps}


def eval_counterfactuals(kind: str, valid: SequenceSet, seed: int, n_symbols: int) -> Counterfactuals:
    """One held-out counterfactual per target of `valid` (for linear DAS: the dedicated length-9
    validation set), fixed by `seed` and drawn on the CPU, so every device scores the same set."""
    generator = step_generator(seed, 2**63 - 1, "cpu")  # a stream no training step uses
    return make_counterfactuals(kind, torch.as_tensor(valid.tokens), torch.as_tensor(valid.lengths),
                                generator, n_symbols)


@torch.no_grad()
def evaluate_intervention(model, intervention, cf: Counterfactuals, device,
                          batch_size: int = 2048) -> dict:
    """Exact match of greedy decoding from intervened states against the targets, overall, per
    length, per token position, and per intervened position (`per_intervened_position`: exact match
    over the examples whose intervention covers that position)."""
    model.eval()
    intervention.eval()
    width = cf.target.shape[1]
    preds = [model.generate(intervention(model, cf.part(slice(i, i + batch_size)).to(device).batch()),
                            width).cpu().numpy() for i in range(0, len(cf), batch_size)]
    pred = np.concatenate(preds)
    target, lengths, changed = cf.target.numpy(), cf.lengths.numpy(), cf.changed.numpy()
    summary = accuracy_summary(pred, target, lengths)
    exact = ((pred == target) | (np.arange(width)[None, :] >= lengths[:, None])).all(1)
    summary["per_intervened_position"] = {int(p): float(exact[changed[:, p]].mean())
                                          for p in range(width) if changed[:, p].any()}
    return summary


PARAMETER_SCHEMAS = {
    # linear DAS: one row per causal variable (position or bigram, -1 = unassigned)
    "das": pa.schema([("variant", pa.string()), ("cell", pa.string()), ("size", pa.int32()),
                      ("seed", pa.int32()), ("kind", pa.string()), ("variable", pa.int32()),
                      ("first_position", pa.int32()), ("last_position", pa.int32()),
                      ("n_dims", pa.int32()), ("fraction", pa.float32())]),
    # onion: one row per channel of the learned scale s_j = g·γ^j + β·j + b
    "onion": pa.schema([("variant", pa.string()), ("cell", pa.string()), ("size", pa.int32()),
                        ("seed", pa.int32()), ("kind", pa.string()), ("channel", pa.int32()),
                        ("gamma", pa.float32()), ("beta", pa.float32()), ("g", pa.float32()),
                        ("b", pa.float32())]),
}


def parameter_table(intervention, kind: str, variant: str, size: int, seed: int,
                    cell: str = "gru") -> pa.Table:
    """The learned parameters of an intervention as an Arrow table (see PARAMETER_SCHEMAS)."""
    if isinstance(intervention, LinearDAS):
        counts = intervention.dims_per_variable().cpu().numpy()  # [V+1]
        n_var = intervention.n_variables
        span = 1 if kind == "linear_bigram" else 0
        variable = np.r_[np.arange(n_var), -1]
        first = np.where(variable >= 0, variable, -1)
        last = np.where(variable >= 0, variable + span, -1)
        columns = {"variable": variable, "first_position": first, "last_position": last,
                   "n_dims": counts, "fraction": counts / counts.sum()}
        schema = PARAMETER_SCHEMAS["das"]
    else:
        columns = {"channel": np.arange(intervention.g.numel()),
                   **{name: getattr(intervention, name).detach().cpu().numpy()
                      for name in ("gamma", "beta", "g", "b")}}
        schema = PARAMETER_SCHEMAS["onion"]
    n = len(next(iter(columns.values())))
    columns = {"variant": [variant] * n, "cell": [cell] * n, "size": np.full(n, size), "seed": np.full(n, seed),
               "kind": [kind] * n, **columns}
    return pa.Table.from_pydict({f.name: pa.array(columns[f.name]).cast(f.type) for f in schema},
                                schema=schema)


def onion_scale_magnitudes(params, max_length: int):
    """Mean over channels of |s_j| for j = 0..max_length-1, per (variant, cell, size, seed, kind)
    row group (files without a cell column are from GRUs).

    params: a DataFrame of onion parameter rows -> DataFrame with columns variant, cell, size, seed,
    kind, position, scale."""
    import pandas as pd
    if "cell" not in params:
        params = params.assign(cell="gru")
    keys = ["variant", "cell", "size", "seed", "kind"]
    rows = []
    for key, group in params.groupby(keys):
        for j in range(max_length):
            s = group["g"] * group["gamma"] ** j + group["beta"] * j + group["b"]
            rows.append({**dict(zip(keys, key)), "position": j, "scale": float(s.abs().mean())})
    return pd.DataFrame(rows)
