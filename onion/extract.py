"""Hidden states and gates of a trained model, written to Parquet (PAPER.md §3, §6).

Two files per model, each from its own job:

- trajectories: one row per (example, time step) over the input phase and then the output phase,
  decoded greedily (the model's own outputs are fed back, as at evaluation). Each row holds the
  hidden state after the step, h, and the cell's gates that produced it (GATES[cell]), in PyTorch's
  order and convention:
  GRU: reset r, update z, candidate n; h' = (1 - z) * n + z * h (the paper's "input gate" is 1 - z).
  LSTM: input i, forget f, candidate g, output o, and the cell state c; c' = f * c + i * g,
  h' = o * tanh(c').  tanh RNN: no gates; h' = tanh(W_ih x + b_ih + W_hh h + b_hh).
- final states: the state the decoder starts from (h_L; [h_L; c_L] for the LSTM, 2N numbers) of
  training-distribution examples (split "train") and of the validation set (split "valid"), with
  their tokens and lengths, for the probes.

Vectors are stored as fixed-size lists of float32 (one cell per row holds all N channels), which
keeps N = 1024 at a few columns: pandas reads them as arrays per row (np.stack the column), DuckDB
as lists (h[1] is channel 0), pyarrow as FixedSizeListArray (`onion.files.vectors()`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from onion.config import DataConfig
from onion.data import ALPHABET, SequenceSet, encode_text, no_input_token, read_sequences, sos_token
from onion.files import vector_column, vectors, write_parquet
from onion.log import log
from onion.model import GATES, cell_step, load_model
from onion.runtime import NonFiniteError


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """What to extract from each model."""

    texts: tuple[str, ...] = ("ab1cadf2",)  # fixed inputs for the trajectories (Fig. 2)
    n_trajectory_examples: int = 16  # plus this many validation sequences
    n_train_states: int = 100_000  # final states of n training sequences drawn uniformly (all if fewer)
    batch_size: int = 4096

    def __post_init__(self):
        if self.n_trajectory_examples < 0 or self.n_train_states < 1 or self.batch_size < 1:
            raise ValueError("extract: n_trajectory_examples >= 0, n_train_states >= 1 and "
                             "batch_size >= 1 are required")


def symbol_name(token: int, n_symbols: int) -> str:
    if token == sos_token(n_symbols):
        return "<sos>"
    if token == no_input_token(n_symbols):
        return "<none>"
    return ALPHABET[token]


@torch.no_grad()
def trajectory(model, tokens: list[int]) -> dict:
    """Step-by-step run of one example through input and greedy output phase.

    Returns {"token": [2L] inputs fed, "output": [2L] readout argmax (-1 in the input phase),
    and each column of GATES[model.cell]: [2L, N] float32 arrays}.
    """
    device = model.embedding.weight.device
    length, s = len(tokens), model.n_symbols
    columns = GATES[model.cell]
    state = {k: torch.zeros(1, model.hidden_size, device=device) for k in ("h", "c")}
    fed, outputs, rows = [], [], {k: [] for k in columns}
    for t in range(2 * length):
        if t < length:
            token = tokens[t]
        elif t == length:
            token = sos_token(s)
        elif model.variant == "autoregressive":
            token = outputs[-1]
        else:
            token = no_input_token(s)
        x = model.embedding(torch.tensor([token], device=device))  # [1, N]
        state = {**state, **cell_step(model, x, state)}
        fed.append(token)
        outputs.append(int(model.readout(state["h"]).argmax(-1)) if t >= length else -1)
        for key in columns:
            rows[key].append(state[key][0].float().cpu().numpy())
    return {"token": fed, "output": outputs, **{k: np.stack(v) for k, v in rows.items()}}


def _keys(n: int, variant: str, size: int, seed: int, cell: str) -> dict:
    return {"variant": pa.array([variant] * n, pa.string()), "cell": pa.array([cell] * n, pa.string()),
            "size": pa.array([size] * n, pa.int32()), "seed": pa.array([seed] * n, pa.int32())}


def trajectory_examples(cfg: ExtractConfig, valid: SequenceSet, n_symbols: int) -> list[list[int]]:
    """The fixed texts, then the first n validation sequences."""
    examples = [encode_text(text, n_symbols) for text in cfg.texts]
    k = min(cfg.n_trajectory_examples, len(valid))
    examples += [list(map(int, valid.tokens[i, :valid.lengths[i]])) for i in range(k)]
    return examples


def trajectories_table(model, examples: list[list[int]], variant: str, size: int, seed: int) -> pa.Table:
    """One row per (example, step); see the module docstring for the columns."""
    cols = {k: [] for k in ("example_id", "text", "length", "phase", "step", "time", "token",
                            "symbol", "output")}
    columns = GATES[model.cell]
    mats = {k: [] for k in columns}
    for example_id, tokens in enumerate(examples):
        run = trajectory(model, tokens)
        length = len(tokens)
        text = "".join(ALPHABET[t] for t in tokens)
        for t in range(2 * length):
            cols["example_id"].append(example_id)
            cols["text"].append(text)
            cols["length"].append(length)
            cols["phase"].append("input" if t < length else "output")
            cols["step"].append(t if t < length else t - length)
            cols["time"].append(t)
            cols["token"].append(run["token"][t])
            cols["symbol"].append(symbol_name(run["token"][t], model.n_symbols))
            cols["output"].append(run["output"][t])
        for key in columns:
            mats[key].append(run[key])
    n = len(cols["time"])
    types = {"example_id": pa.int32(), "text": pa.string(), "length": pa.int8(), "phase": pa.string(),
             "step": pa.int8(), "time": pa.int16(), "token": pa.int16(), "symbol": pa.string(),
             "output": pa.int16()}
    arrays = {**_keys(n, variant, size, seed, model.cell), **{k: pa.array(v, types[k]) for k, v in cols.items()},
              **{k: vector_column(np.concatenate(mats[k])) for k in columns}}
    return pa.table(arrays)


@torch.no_grad()
def final_states(model, data: SequenceSet, device, batch_size: int = 4096) -> np.ndarray:
    """The final state of every sequence: [n, state_size] float32."""
    out = []
    for start in range(0, len(data), batch_size):
        tokens = torch.as_tensor(data.tokens[start:start + batch_size], device=device)
        lengths = torch.as_tensor(data.lengths[start:start + batch_size], device=device)
        out.append(model.encode(tokens, lengths).float().cpu().numpy())
    return np.concatenate(out)


def states_table(model, splits: dict[str, SequenceSet], device, variant: str, size: int, seed: int,
                 batch_size: int = 4096) -> pa.Table:
    """Final states of each split: columns variant, cell, size, seed, split, example_id, length,
    tokens, text, h (the state the decoder starts from: state_size numbers)."""
    parts = []
    for split, data in splits.items():
        n, width = data.tokens.shape
        mask = np.arange(width)[None, :] < data.lengths[:, None]
        offsets = np.concatenate([[0], np.cumsum(data.lengths)]).astype(np.int32)
        chars = np.array(list(ALPHABET))[data.tokens]
        parts.append(pa.table({
            **_keys(n, variant, size, seed, model.cell),
            "split": pa.array([split] * n, pa.string()),
            "example_id": pa.array(np.arange(n, dtype=np.int32)),
            "length": pa.array(data.lengths.astype(np.int8)),
            "tokens": pa.ListArray.from_arrays(pa.array(offsets), pa.array(data.tokens[mask].astype(np.int8))),
            "text": pa.array(["".join(row[:k]) for row, k in zip(chars, data.lengths)], pa.string()),
            "h": vector_column(final_states(model, data, device, batch_size)),
        }))
    return pa.concat_tables(parts)


def read_states(path, split: str, max_length: int | None = None) -> tuple[np.ndarray, SequenceSet, dict]:
    """(h [n, state_size] float32, the sequences padded to max_length, {"variant", "cell", "size",
    "seed"}) of one split ("train" or "valid") of a final-states file (files without a cell column
    are from GRUs)."""
    try:
        missing = {"h", "tokens", "length", "split", "variant", "size", "seed"} - set(pq.read_schema(path).names)
        if missing:
            raise ValueError(f"{path}: not a final-states file (missing columns {sorted(missing)})")
        table = pq.read_table(path, filters=[("split", "=", split)])
    except (OSError, pa.ArrowInvalid) as err:
        raise ValueError(f"{path}: unreadable states file ({err})") from err
    if table.num_rows == 0:
        raise ValueError(f"{path}: no rows with split == {split!r}")
    lengths = table.column("length").to_numpy().astype(np.int64)
    flat = table.column("tokens").combine_chunks().flatten().to_numpy().astype(np.int64)
    width = max_length or int(lengths.max())
    if lengths.max() > width:
        raise ValueError(f"{path}: sequences up to length {lengths.max()} exceed max_length {width}")
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    tokens = np.zeros((len(lengths), width), dtype=np.int64)
    tokens[rows, cols] = flat
    keys = {k: table.column(k)[0].as_py() if k in table.column_names else "gru"
            for k in ("variant", "cell", "size", "seed")}
    h = vectors(table, "h")
    bad = ~np.isfinite(h)
    if bad.any():
        raise NonFiniteError(f"{path}: {int(bad.sum())} NaN/Inf values in the {split!r} states "
                             f"({int(bad.any(1).sum())} of {len(h)} rows); re-extract them "
                             "(extract_final_states) from a finite model")
    return h, SequenceSet(tokens, lengths), keys


def run_extract_trajectories(model_path, valid_path, out, variant: str, size: int, seed: int,
                             data: DataConfig, cfg: ExtractConfig, device) -> None:
    """The extract_trajectories job: trajectories of the fixed texts and the first validation
    sequences to Parquet; NaN/Inf states or gates stop it, writing nothing."""
    began = time.perf_counter()
    model = load_model(model_path, device, variant, size)
    valid = read_sequences(valid_path, data.max_length)
    examples = trajectory_examples(cfg, valid, data.n_symbols)
    table = trajectories_table(model, examples, variant, size, seed)
    bad = [k for k in GATES[model.cell] if not np.isfinite(vectors(table, k)).all()]
    if bad:
        raise NonFiniteError(f"{model_path}: the model produced NaN/Inf {', '.join(bad)} in its trajectories; "
                             "nothing written")
    write_parquet(table, out)
    log(f"wrote {table.num_rows} steps of {len(examples)} examples to {out} "
        f"({Path(out).stat().st_size / 1e6:.2f} MB, {time.perf_counter() - began:.1f} s)")


def probe_training_sample(train: SequenceSet, n: int, seed: int) -> SequenceSet:
    """n training sequences drawn uniformly without replacement (all of them if n >= len(train)),
    in the training set's order: the probes see the training set's length mix, as the authors'
    probes, which stream the whole training set. (The set is stored in draw order, and its first
    rows over-represent short lengths: the distinct sampler runs out of short sequences later.)"""
    if n >= len(train):
        return train
    rows = np.sort(np.random.default_rng([seed, 9_003]).choice(len(train), size=n, replace=False))
    return SequenceSet(train.tokens[rows], train.lengths[rows])


def run_extract_states(model_path, train_path, valid_path, out, variant: str, size: int, seed: int,
                       data: DataConfig, cfg: ExtractConfig, device) -> None:
    """The extract_final_states job: final states of cfg.n_train_states training sequences
    (probe_training_sample) and of the validation set to Parquet; NaN/Inf states stop it, writing nothing."""
    began = time.perf_counter()
    model = load_model(model_path, device, variant, size)
    train = read_sequences(train_path, data.max_length)
    if cfg.n_train_states > len(train):
        log(f"extract.n_train_states={cfg.n_train_states} exceeds the {len(train)} sequences of "
            f"{train_path}: using all of them")
    train = probe_training_sample(train, cfg.n_train_states, data.seed)
    valid = read_sequences(valid_path, data.max_length)
    table = states_table(model, {"train": train, "valid": valid}, device, variant, size, seed,
                         cfg.batch_size)
    if not np.isfinite(vectors(table, "h")).all():
        raise NonFiniteError(f"{model_path}: the model produced NaN/Inf final states; nothing written")
    write_parquet(table, out)
    log(f"wrote final states of {len(train)} train and {len(valid)} valid sequences to {out} "
        f"({Path(out).stat().st_size / 1e6:.2f} MB, {time.perf_counter() - began:.1f} s)")
