"""Training the repeat-task GRU: the paper's AdamW schedule, resumable checkpoints, metrics."""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np
import torch
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from onion.config import TrainConfig
from onion.data import SequenceSet
from onion.evaluation import evaluate_model
from onion.model import RepeatGRU
from onion.runtime import Progress, fingerprint, resume, save_checkpoint


@functools.lru_cache(maxsize=2)
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> np.ndarray:
    """Indices of the examples of `step`: epochs of a seeded permutation, a pure function of step."""
    epoch, offset = divmod(step * batch_size, n)
    idx = _epoch_order(n, seed, epoch)[offset:offset + batch_size]
    if len(idx) < batch_size:  # the batch crosses into the next epoch
        idx = np.concatenate([idx, _epoch_order(n, seed, epoch + 1)[:batch_size - len(idx)]])
    return idx


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the real output tokens: logits [B, T, V], targets [B, T], lengths [B]."""
    mask = torch.arange(targets.shape[1], device=targets.device)[None, :] < lengths[:, None]
    return F.cross_entropy(logits[mask], targets[mask])


def packed_loss(model: RepeatGRU, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Teacher-forced loss with encoder and decoder as one packed GRU call.

    The same GRU reads the input and then decodes, so each example is one sequence of 2L steps
    [x_1..x_L, SOS, y_1..y_{L-1}] (no-input variant: SOS, NOINPUT, ...); packing skips the padding.
    Equal to sequence_loss(model(tokens, lengths), ...) up to float rounding.
    tokens [B, T], lengths [B] -> scalar.
    """
    batch, width = tokens.shape
    steps = torch.arange(2 * width, device=tokens.device)[None, :]  # [1, 2T]
    in_input = steps < lengths[:, None]  # [B, 2T]
    decoder_in = model.decoder_inputs(tokens)  # [B, T]
    out_pos = (steps - lengths[:, None]).clamp(0, width - 1)  # decoder step index, [B, 2T]
    seq = torch.where(in_input, tokens.repeat(1, 2), decoder_in.gather(1, out_pos))
    target = torch.where(in_input, torch.full_like(seq, -100), tokens.gather(1, out_pos))
    packed = pack_padded_sequence(torch.stack([seq, target], -1), (2 * lengths).cpu(),
                                  batch_first=True, enforce_sorted=False)
    seq_p, target_p = packed.data.unbind(-1)  # [sum 2L] each
    embedded = PackedSequence(model.embedding(seq_p), packed.batch_sizes,
                              packed.sorted_indices, packed.unsorted_indices)
    states, _ = model.gru(embedded)
    return F.cross_entropy(model.readout(states.data), target_p, ignore_index=-100)


def train_step(model: RepeatGRU, optimizer, tokens: torch.Tensor, lengths: torch.Tensor):
    """One teacher-forced update on a padded batch: tokens [B, T], lengths [B]. Returns the loss."""
    tokens = tokens[:, :int(lengths.max())]  # no step beyond the longest sequence
    loss = packed_loss(model, tokens, lengths)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The paper's AdamW; as PyTorch's fused kernel (same update, fewer operations)."""
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas),
                             fused=True)


def train_model(model: RepeatGRU, train: SequenceSet, valid: SequenceSet, cfg: TrainConfig,
                seed: int, device: torch.device, checkpoint_path=None,
                stop_after: int | None = None) -> dict:
    """Train `model` in place for cfg.steps steps; resume from `checkpoint_path` when it matches.

    `stop_after` ends the loop early (after that many steps in total) as if the job were killed:
    used to test resumption. Returns the training record (losses, timing, resumed_from).
    """
    model.to(device).train()
    optimizer = make_optimizer(model.parameters(), cfg)
    identity = {"model": model.hyperparameters(), "train": dataclasses.asdict(cfg), "seed": seed,
                "training data": fingerprint(train.tokens, train.lengths)}
    state = resume(checkpoint_path, identity, device, model, optimizer, "model", cfg.steps)
    start = state["step"] if state else 0
    tokens = torch.as_tensor(train.tokens, device=device)
    lengths = torch.as_tensor(train.lengths, device=device)
    progress = Progress(cfg.steps, start=start, every=cfg.log_every, label="training step",
                        cause="train.lr may be too high, or the training data are corrupt")
    began = time.perf_counter()
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    for step in range(start, end):
        idx = torch.as_tensor(batch_indices(step, cfg.batch_size, len(train), seed), device=device)
        loss = train_step(model, optimizer, tokens[idx], lengths[idx])
        done = step + 1
        extra = ""
        if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
            extra = f"valid exact match {evaluate_model(model, valid, device)['exact_match']:.3f}"
            model.train()
        progress.update(done, loss.item(), extra)
        if checkpoint_path and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 \
                and done != cfg.steps:
            save_checkpoint(checkpoint_path, {"identity": identity, "step": done,
                                              "model": model.state_dict(),
                                              "optimizer": optimizer.state_dict()})
    seconds = time.perf_counter() - began
    model.eval()
    return {"steps": cfg.steps, "resumed_from": start, "steps_this_run": end - start,
            "seconds_this_run": seconds, "steps_per_second": (end - start) / max(seconds, 1e-9),
            "final_loss": float(loss.item()) if end > start else None, "finished": end == cfg.steps}
