"""Training and evaluating interventions on a frozen repeat model (PAPER.md §4).

The model is never updated: each step encodes counterfactual sequences, intervenes on the final
state, and trains the intervention on the cross-entropy of decoding the counterfactual target
with teacher forcing. Evaluation is exact match of greedy decoding from the intervened state.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pyarrow as pa
import torch

from onion.config import DataConfig, OptimConfig, identity_settings
from onion.data import SequenceSet, read_sequences
from onion.evaluation import accuracy_summary
from onion.files import write_json, write_parquet
from onion.interventions.counterfactuals import (Counterfactuals, make_counterfactuals, n_variables,
                                                 step_generator)
from onion.interventions.das import LinearDAS
from onion.interventions.onion_intervention import OnionIntervention
from onion.log import log
from onion.loop import apply_update, each_step, optimise
from onion.model import load_model
from onion.model.unrolled import frozen_runner
from onion.names import (INTERVENTION_KINDS, LINEAR_INTERVENTION_KINDS, ONION_INTERVENTION_KINDS, PRECISIONS,
                         REPLACEMENTS, ROTATIONS)
from onion.runtime import fingerprint
from onion.training import make_optimizer


@dataclasses.dataclass(frozen=True)
class InterventionConfig(OptimConfig):
    """Optimisation of one intervention (authors: 60,000 steps, batch 256, AdamW lr 1e-3, wd 0.1)."""

    section: ClassVar[str] = "interventions"
    replacement: str = "any"  # counterfactual tokens: any (authors: uniform) or different
    precision: str = "fp32"  # the frozen model's recurrent product (unrolled kernel): fp32 or bf16 inputs
    rotation: str = "matrix_exp"  # linear DAS's orthogonal map: torch's orthogonal() or cayley

    def __post_init__(self):
        super().__post_init__()
        for name, value, choices in (("replacement", self.replacement, REPLACEMENTS),
                                     ("precision", self.precision, PRECISIONS),
                                     ("rotation", self.rotation, ROTATIONS)):
            if value not in choices:
                raise ValueError(f"interventions.{name} must be one of {choices}, got {value!r}")


def make_intervention(kind: str, n_symbols: int, hidden_size: int, max_length: int,
                      rotation: str = "matrix_exp") -> torch.nn.Module:
    """A fresh intervention of `kind`; linear DAS with the orthogonal map `rotation`."""
    if kind in LINEAR_INTERVENTION_KINDS:
        return LinearDAS(hidden_size, n_variables(kind, max_length), rotation)
    if kind in ONION_INTERVENTION_KINDS:
        return OnionIntervention(n_symbols, hidden_size, control=kind == "onion_control")
    raise ValueError(f"unknown intervention kind {kind!r}; expected one of {INTERVENTION_KINDS}")


def targets_for(kind: str, data: SequenceSet, das_length: int | None) -> SequenceSet:
    """The target sequences an intervention trains on: linear DAS only those of length `das_length`
    (the authors' code: 9; None = all), the onion kinds all of them."""
    if kind in LINEAR_INTERVENTION_KINDS and das_length is not None:
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
                      lengths: torch.Tensor, batch_size: int, seed: int, step: int,
                      replacement: str = "any") -> torch.Tensor:
    """One update of `intervention` on targets tokens [n, T], lengths [n] (on the device). Batch,
    counterfactuals and Gumbel noise are drawn on the device, a pure function of (seed, step).
    `model`: the frozen RepeatRNN, or its onion.model.unrolled.UnrolledRepeatModel (the same
    `encode` and `decode_loss`). Returns the loss, still on the device."""
    generator = step_generator(seed, step, tokens.device)
    idx = torch.randint(len(tokens), (batch_size,), generator=generator, device=tokens.device)
    batch = make_counterfactuals(kind, tokens[idx], lengths[idx], generator, model.n_symbols,
                                 replacement).batch()
    batch["generator"] = generator
    h = intervention(model, batch)  # [B, N]
    loss = model.decode_loss(h, batch["target"], batch["lengths"]) + intervention.regularizer()
    return apply_update(optimizer, loss)


def train_intervention(model, kind: str, train: SequenceSet, cfg: InterventionConfig, seed: int,
                       device, max_length: int, checkpoint_path=None,
                       stop_after: int | None = None, das_length: int | None = None,
                       kernel: str = "nn") -> tuple[torch.nn.Module, dict]:
    """Train a `kind` intervention on the frozen `model`; resumes from `checkpoint_path` when it
    matches. Linear DAS trains on the length-`das_length` targets of `train` only (None = all).
    Batch i is a pure function of (seed, i); `kernel` says how the frozen GRU runs in the training
    steps (onion.names.KERNELS), cfg.precision its recurrent product's precision (bf16 only
    unrolled); evaluation runs the model's own fp32 layers. Returns (intervention, training record)."""
    model.to(device)
    before = _freeze(model)
    targets = targets_for(kind, train, das_length)
    torch.manual_seed(seed)
    intervention = make_intervention(kind, model.n_symbols, model.state_size, max_length, cfg.rotation).to(device)
    optimizer = make_optimizer(intervention.parameters(), cfg)
    identity = {"kind": kind, "config": identity_settings(cfg), "seed": seed, "max_length": max_length,
                "model": getattr(model, "hyperparameters", lambda: type(model).__name__)(),
                "model weights": fingerprint(*before.values()),
                "training targets": fingerprint(targets.tokens, targets.lengths)}
    # cuDNN's GRU backward needs train mode; the repeat models have no dropout, so it changes nothing
    model.train()
    intervention.train()
    tokens = torch.as_tensor(targets.tokens, device=device)  # [n, T], on the device once
    lengths = torch.as_tensor(targets.lengths, device=device)  # [n]
    runner = frozen_runner(model, kernel, device, cfg.precision)

    def update(step: int, _) -> torch.Tensor:
        return intervention_step(runner, intervention, optimizer, kind, tokens, lengths,
                                 cfg.batch_size, seed, step, cfg.replacement)

    record = optimise(intervention, optimizer, cfg, update, each_step, key="intervention",
                      identity=identity, device=device, label=f"{kind} intervention step",
                      cause="interventions.lr may be too high", checkpoint_path=checkpoint_path,
                      stop_after=stop_after)
    model.eval()
    intervention.eval()
    after = model.state_dict()
    if any(not torch.equal(before[k], after[k]) for k in before):
        raise RuntimeError("the frozen model changed while training an intervention")
    return intervention, record


def eval_counterfactuals(kind: str, valid: SequenceSet, seed: int, n_symbols: int,
                         replacement: str = "any") -> Counterfactuals:
    """One held-out counterfactual per target of `valid` (for linear DAS: the dedicated length-9
    validation set), fixed by `seed` and drawn on the CPU, so every device scores the same set."""
    generator = step_generator(seed, 2**63 - 1, "cpu")  # a stream no training step uses
    return make_counterfactuals(kind, torch.as_tensor(valid.tokens), torch.as_tensor(valid.lengths),
                                generator, n_symbols, replacement)


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


def run_intervention(kind: str, variant: str, size: int, seed: int, data: DataConfig,
                     cfg: InterventionConfig, model_path, train_path, valid_path, out, parameters_path,
                     device, checkpoint=None, das_train_path=None, das_valid_path=None,
                     kernel: str = "nn") -> dict:
    """The train_intervention job: train a `kind` intervention on the frozen model and score it
    on held-out counterfactuals. Linear DAS trains on its own training set (make-dataset
    --das-train, data.das_train) and is scored on its own validation set (the authors' dedicated
    length-9 set, another seed); the onion kinds train on the model's training set and are scored
    on the validation set."""
    linear = kind in LINEAR_INTERVENTION_KINDS
    if linear and not (das_train_path and das_valid_path):
        raise ValueError(f"--das-train-data and --das-valid-data are required for the {kind} intervention")
    model = load_model(model_path, device, variant, size)
    train = read_sequences(das_train_path if linear else train_path, data.max_length)
    valid = read_sequences(das_valid_path if linear else valid_path, data.max_length)
    log(f"training the {kind} intervention on {variant} N={size} seed={seed} "
        f"on {device} ({torch.get_num_threads()} threads, kernel {kernel}): {cfg}")
    intervention, record = train_intervention(model, kind, train, cfg, seed, device, data.max_length,
                                              checkpoint, das_length=data.das_length if linear else None,
                                              kernel=kernel)
    held_out = eval_counterfactuals(kind, valid, seed, data.n_symbols, cfg.replacement)
    metrics = evaluate_intervention(model, intervention, held_out, device)
    log(f"{kind}: exact match {metrics['exact_match']:.4f} on {metrics['n']} held-out "
        f"counterfactuals ({record['steps_per_second']:.1f} steps/s this run)")
    write_parquet(parameter_table(intervention, kind, variant, size, seed, model.cell), parameters_path)
    write_json(out, {"variant": variant, "cell": model.cell, "size": size, "seed": seed, "kind": kind,
                     "steps": cfg.steps, "lr": cfg.lr, "device": str(device), **metrics,
                     "config": dataclasses.asdict(cfg), "training": record})
    return metrics
