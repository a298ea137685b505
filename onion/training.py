"""Training the repeat model (GRU, LSTM or tanh RNN): the paper's AdamW schedule, resumable checkpoints, metrics."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence

from onion.config import DataConfig, OptimConfig, TrainConfig, identity_settings
from onion.data import SequenceSet, read_sequences
from onion.evaluation import evaluate_model
from onion.files import write_json
from onion.log import log
from onion.loop import apply_update, optimise
from onion.model import RepeatRNN, save_model
from onion.model.rnn import packing
from onion.model.unrolled import check_precision, compiled_loss, model_tensors, use_unrolled
from onion.runtime import fingerprint, upload


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


def sequence_table(model: RepeatRNN, tokens: torch.Tensor, lengths: torch.Tensor,
                   chunk: int = 65_536) -> tuple[torch.Tensor, torch.Tensor]:
    """Every example as the one sequence of 2L steps the shared GRU reads when teacher-forced.

    [x_1..x_L, SOS, y_1..y_{L-1}] (no-input variant: SOS, NOINPUT, ...) and its targets (-100 while
    reading the input). Built once, on the data's device. tokens [n, T], lengths [n] ->
    (inputs [n, 2T], targets [n, 2T]); steps at or after 2L are padding.
    """
    width = tokens.shape[1]
    steps = torch.arange(2 * width, device=tokens.device)[None, :]  # [1, 2T]
    inputs, targets = [], []
    for start in range(0, len(tokens), chunk):
        tok, length = tokens[start:start + chunk], lengths[start:start + chunk]
        in_input = steps < length[:, None]  # [b, 2T]
        out_pos = (steps - length[:, None]).clamp(0, width - 1)  # decoder step index, [b, 2T]
        inputs.append(torch.where(in_input, tok.repeat(1, 2), model.decoder_inputs(tok).gather(1, out_pos)))
        targets.append(torch.where(in_input, torch.full_like(inputs[-1], -100), tok.gather(1, out_pos)))
    return torch.cat(inputs), torch.cat(targets)


def pack_plan(idx: np.ndarray, lengths: np.ndarray, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the packed batch of examples `idx` lies in a sequence table, computed on the host.

    Packing as pack_padded_sequence(enforce_sorted=False) does it: examples sorted by decreasing
    length 2L, then time-major. idx [B], lengths [n] (input lengths L), width = the table's 2T ->
    (positions [sum 2L] into the flattened table, batch_sizes [max 2L], int64 on the CPU).
    """
    order, slot, t, batch_sizes = packing(torch.from_numpy(2 * lengths[idx].astype(np.int64)))
    rows = torch.from_numpy(idx.astype(np.int64))[order]  # [B] table rows, longest first
    return rows[slot] * width + t, batch_sizes


def packed_batch_loss(model: RepeatRNN, inputs: torch.Tensor, targets: torch.Tensor,
                      batch_sizes: torch.Tensor) -> torch.Tensor:
    """Teacher-forced loss of a packed batch: inputs, targets [sum 2L] (time-major, as pack_plan
    orders them), batch_sizes [max 2L] on the CPU. Encoder and decoder are one packed GRU call."""
    embedded = PackedSequence(model.embedding(inputs), batch_sizes)
    states, _ = model.rnn(embedded)
    return F.cross_entropy(model.readout(states.data), targets, ignore_index=-100)


def unrolled_batch_loss(model: RepeatRNN, loss_fn, inputs: torch.Tensor, targets: torch.Tensor,
                        batch_sizes: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """packed_batch_loss through the unrolled kernel `loss_fn` (onion.model.unrolled.compiled_loss()
    or its packed_loss), from the zero state; `precision` of its recurrent product (train.precision)."""
    start = model.embedding.weight.new_zeros(int(batch_sizes[0]), model.state_size)  # [B, state_size]
    return loss_fn(model.cell, *model_tensors(model), inputs, start, targets, batch_sizes.tolist(), precision)


def packed_loss(model: RepeatRNN, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The teacher-forced loss of a padded batch (tokens [B, T], lengths [B]) through the packed
    path; equal to sequence_loss(model(tokens, lengths), ...) up to float rounding."""
    inputs, targets = sequence_table(model, tokens, lengths)
    positions, batch_sizes = pack_plan(np.arange(len(tokens)), lengths.cpu().numpy(), inputs.shape[1])
    positions = positions.to(tokens.device)
    return packed_batch_loss(model, inputs.flatten()[positions], targets.flatten()[positions], batch_sizes)


def packed_batches(model: RepeatRNN, data: SequenceSet, device):
    """The sequence table of `data` on `device`, built once, and a function that returns the packed
    batch of examples idx [B] (a NumPy array): (inputs, targets [sum 2L] on `device`, batch_sizes).
    Each batch uploads only its positions, without waiting for the device."""
    inputs, targets = (t.flatten() for t in sequence_table(
        model, torch.as_tensor(data.tokens, device=device), torch.as_tensor(data.lengths, device=device)))
    width = 2 * data.tokens.shape[1]

    def batch(idx: np.ndarray):
        positions, batch_sizes = pack_plan(idx, data.lengths, width)
        positions = upload(positions, device)  # pinned on a GPU host
        return inputs[positions], targets[positions], batch_sizes

    return batch


def training_kernel(kernel: str, model: RepeatRNN, optimizer, data: SequenceSet, device,
                    precision: str = "fp32"):
    """How a training step runs with `kernel` (onion.names.KERNELS): (rows, update), where rows(idx)
    gathers the packed batch of examples idx [B] (a NumPy array; see packed_batches) and
    update(batch) takes one step on it, returning the loss on the device. The loss is
    packed_batch_loss (torch.nn's layer) or onion.model.unrolled's compiled packed_loss, whose
    recurrent product runs in `precision` (train.precision; bf16 only there)."""
    check_precision(precision, kernel, device, "train.precision")
    if use_unrolled(kernel, device):
        unrolled_loss = compiled_loss()

        def loss(inputs, targets, batch_sizes):
            return unrolled_batch_loss(model, unrolled_loss, inputs, targets, batch_sizes, precision)
    else:
        def loss(inputs, targets, batch_sizes):
            return packed_batch_loss(model, inputs, targets, batch_sizes)
    return packed_batches(model, data, device), lambda batch: apply_update(optimizer, loss(*batch))


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The paper's AdamW; as PyTorch's fused kernel (same update, fewer operations)."""
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas),
                             fused=True)


def train_model(model: RepeatRNN, train: SequenceSet, valid: SequenceSet, cfg: TrainConfig,
                seed: int, device: torch.device, checkpoint_path=None,
                stop_after: int | None = None, kernel: str = "nn") -> dict:
    """Train `model` in place for cfg.steps steps; resume from `checkpoint_path` when it matches.

    `stop_after` ends the loop early (after that many steps in total) as if the job were killed:
    used to test resumption. `kernel`: how the GRU runs (onion.names.KERNELS); cfg.precision: its
    recurrent product's (bf16 with the unrolled kernel only). Returns the training record
    (onion.loop.optimise).
    """
    model.to(device).train()
    optimizer = make_optimizer(model.parameters(), cfg)
    identity = {"model": model.hyperparameters(), "train": identity_settings(cfg), "seed": seed,
                "training data": fingerprint(train.tokens, train.lengths)}
    rows, step_on = training_kernel(kernel, model, optimizer, train, device, cfg.precision)

    def batches(start: int, end: int):
        return ((step, rows(batch_indices(step, cfg.batch_size, len(train), seed)))
                for step in range(start, end))

    def evaluate(done: int) -> str:
        if not cfg.eval_every or done % cfg.eval_every or done == cfg.steps:
            return ""
        accuracy = evaluate_model(model, valid, device)["exact_match"]
        model.train()
        return f"valid exact match {accuracy:.3f}"

    record = optimise(model, optimizer, cfg, lambda step, batch: step_on(batch), batches, key="model",
                      identity=identity, device=device, label="training step",
                      cause="train.lr may be too high, or the training data are corrupt",
                      checkpoint_path=checkpoint_path, stop_after=stop_after, after_step=evaluate)
    model.eval()
    return record


def run_training(cell: str, variant: str, size: int, seed: int, data: DataConfig, cfg: TrainConfig,
                 train_path, valid_path, model_path, metrics_path, device, checkpoint=None,
                 kernel: str = "nn") -> dict:
    """The train_model job: train one repeat model from the datasets on disk, evaluate it on the
    validation set, write model.pt and metrics.json, and remove the finished run's checkpoint."""
    train = read_sequences(train_path, data.max_length)
    valid = read_sequences(valid_path, data.max_length)
    log(f"training {variant} {cell} N={size} seed={seed} on {device} "
        f"({torch.get_num_threads()} threads, kernel {kernel}): {cfg}")
    torch.manual_seed(seed)
    model = RepeatRNN(data.n_symbols, size, variant, cell)
    record = train_model(model, train, valid, cfg, seed, device, checkpoint, kernel=kernel)
    metrics = evaluate_model(model, valid, device)
    log(f"validation exact match {metrics['exact_match']:.4f} "
        f"({record['steps_per_second']:.1f} steps/s this run)")
    save_model(model, model_path)
    write_json(metrics_path, {"variant": variant, "cell": cell, "size": size, "seed": seed,
                              "device": str(device), **metrics, "training": record,
                              "config": dataclasses.asdict(cfg)})
    if checkpoint:
        Path(checkpoint).unlink(missing_ok=True)
    return metrics
