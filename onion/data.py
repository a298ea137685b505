"""The repeat task: vocabulary, deterministic train/validation sets, Parquet I/O (PAPER.md §2)."""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from onion.config import DataConfig
from onion.files import write_parquet
from onion.log import log

ALPHABET = string.digits + string.ascii_lowercase  # symbols are drawn from "0-9a-z"
DATASET_SCHEMA = pa.schema([
    ("example_id", pa.int32()),
    ("length", pa.int8()),
    ("tokens", pa.list_(pa.int8())),  # symbol ids, 0..n_symbols-1
    ("text", pa.string()),  # the same sequence written with the alphabet, e.g. "ab1c"
])


def sos_token(n_symbols: int) -> int:
    """Id of the start-of-output token (after the symbols)."""
    return n_symbols


def no_input_token(n_symbols: int) -> int:
    """Id of the constant decoder input of the no-input variant."""
    return n_symbols + 1


def encode_text(text: str, n_symbols: int = 30) -> list[int]:
    """'ab1c' -> symbol ids; raises on characters outside the vocabulary."""
    ids = [ALPHABET.index(ch) if ch in ALPHABET else -1 for ch in text]
    if any(i < 0 or i >= n_symbols for i in ids):
        raise ValueError(f"{text!r} has symbols outside the {n_symbols}-symbol vocabulary "
                         f"{ALPHABET[:n_symbols]!r}")
    return ids


@dataclasses.dataclass
class SequenceSet:
    """Sequences padded to max_length with 0; only the first `lengths[i]` tokens of row i count."""

    tokens: np.ndarray  # [n, max_length] int64
    lengths: np.ndarray  # [n] int64

    def __len__(self) -> int:
        return len(self.lengths)


def sequence_keys(tokens: np.ndarray, lengths: np.ndarray, base: int) -> np.ndarray:
    """Injective int64 key of (length, tokens[:length]) for tokens < base."""
    positions = np.arange(tokens.shape[1])
    digits = np.where(positions[None, :] < lengths[:, None], tokens, 0).astype(np.int64)
    codes = (digits * (np.int64(base) ** positions)[None, :]).sum(axis=1)
    return codes * 16 + lengths


def _codes_to_tokens(codes: np.ndarray, lengths: np.ndarray, n_symbols: int, max_length: int):
    """Inverse of the base-n_symbols code: [n] codes -> [n, max_length] tokens padded with 0."""
    positions = np.arange(max_length)
    tokens = (codes[:, None] // (np.int64(n_symbols) ** positions)[None, :]) % n_symbols
    return np.where(positions[None, :] < lengths[:, None], tokens, 0)


def _validation_counts(cfg: DataConfig, rng: np.random.Generator) -> dict[int, int]:
    """Examples per length: uniform over lengths, each capped at max_valid_fraction of all sequences."""
    lengths = list(range(cfg.min_length, cfg.max_length + 1))
    caps = {n: int(cfg.max_valid_fraction * cfg.n_symbols ** n) for n in lengths}
    if sum(caps.values()) < cfg.n_valid:
        raise ValueError(f"data.n_valid={cfg.n_valid} exceeds the {sum(caps.values())} sequences the "
                         f"max_valid_fraction cap allows")
    counts = dict.fromkeys(lengths, 0)
    remaining = cfg.n_valid
    while remaining:
        open_lengths = [n for n in lengths if counts[n] < caps[n]]
        drawn = rng.multinomial(remaining, [1 / len(open_lengths)] * len(open_lengths))
        for n, k in zip(open_lengths, drawn):
            counts[n] += int(k)
        remaining = sum(max(0, counts[n] - caps[n]) for n in lengths)
        counts = {n: min(counts[n], caps[n]) for n in lengths}
    return counts


def _unique_codes(rng: np.random.Generator, space: int, count: int) -> np.ndarray:
    """`count` distinct integers in [0, space), in random order."""
    if space <= 1_000_000:
        return rng.permutation(space)[:count].astype(np.int64)
    codes = np.empty(0, dtype=np.int64)
    while len(codes) < count:
        new = rng.integers(0, space, size=2 * (count - len(codes)), dtype=np.int64)
        codes = np.concatenate([codes, new])
        _, first = np.unique(codes, return_index=True)
        codes = codes[np.sort(first)]
    return codes[:count]


def make_validation(cfg: DataConfig, rng: np.random.Generator) -> SequenceSet:
    counts = _validation_counts(cfg, rng)
    codes, lengths = [], []
    for n, k in counts.items():
        codes.append(_unique_codes(rng, cfg.n_symbols ** n, k))
        lengths.append(np.full(k, n, dtype=np.int64))
    codes, lengths = np.concatenate(codes), np.concatenate(lengths)
    order = rng.permutation(len(codes))
    codes, lengths = codes[order], lengths[order]
    return SequenceSet(_codes_to_tokens(codes, lengths, cfg.n_symbols, cfg.max_length), lengths)


def _excluded_keys(exclude: list[SequenceSet], n_symbols: int) -> np.ndarray:
    """Sorted keys of every sequence in `exclude`."""
    return np.sort(np.concatenate([sequence_keys(s.tokens, s.lengths, n_symbols) for s in exclude]))


def make_train_iid(cfg: DataConfig, rng: np.random.Generator, exclude: SequenceSet) -> SequenceSet:
    """i.i.d. sequences with repeats (uniform length, uniform tokens) that never occur in `exclude`."""
    excluded = _excluded_keys([exclude], cfg.n_symbols)
    lengths = rng.integers(cfg.min_length, cfg.max_length + 1, size=cfg.n_train).astype(np.int64)
    codes = rng.integers(0, np.int64(cfg.n_symbols) ** lengths, dtype=np.int64)
    redo = np.isin(codes * 16 + lengths, excluded)
    for _ in range(1000):
        if not redo.any():
            break
        codes[redo] = rng.integers(0, np.int64(cfg.n_symbols) ** lengths[redo], dtype=np.int64)
        redo[redo] = np.isin(codes[redo] * 16 + lengths[redo], excluded)
    else:
        raise ValueError("could not draw training sequences outside the validation set; "
                         "lower data.max_valid_fraction")
    return SequenceSet(_codes_to_tokens(codes, lengths, cfg.n_symbols, cfg.max_length), lengths)


def _draw_distinct(rng: np.random.Generator, lengths_range: tuple[int, int], n: int, n_symbols: int,
                   max_length: int, excluded: np.ndarray, what: str) -> SequenceSet:
    """`n` distinct sequences not in `excluded` (sorted keys), drawn as a rejection sampler would:
    draw (uniform length, uniform tokens) again and again, keep each new sequence the first time it
    appears. Short lengths run out of new sequences, so the kept length mix is not uniform."""
    low, high = lengths_range
    in_range = ((excluded % 16) >= low) & ((excluded % 16) <= high)
    space = sum(n_symbols ** k for k in range(low, high + 1)) - int(in_range.sum())
    if n > space:
        raise ValueError(f"{what}: {n} distinct sequences asked for, but only {space} of lengths "
                         f"{low}..{high} exist outside the validation sets")
    keys = np.empty(0, dtype=np.int64)  # kept keys, in the order they were first drawn
    while len(keys) < n:
        # the draws a sequential sampler would make; the sum of remaining shares bounds the waste
        lengths = rng.integers(low, high + 1, size=max(1024, 2 * (n - len(keys)))).astype(np.int64)
        codes = rng.integers(0, np.int64(n_symbols) ** lengths, dtype=np.int64)
        drawn = codes * 16 + lengths
        drawn = drawn[~np.isin(drawn, excluded)]
        merged = np.concatenate([keys, drawn])
        _, first = np.unique(merged, return_index=True)
        keys = merged[np.sort(first)]  # first occurrences, in draw order
    keys = keys[:n]
    lengths = keys % 16
    return SequenceSet(_codes_to_tokens(keys // 16, lengths, n_symbols, max_length), lengths)


def make_train_distinct(cfg: DataConfig, rng: np.random.Generator, exclude: SequenceSet) -> SequenceSet:
    """cfg.n_train distinct sequences outside `exclude`, as the authors' generator draws them."""
    return _draw_distinct(rng, (cfg.min_length, cfg.max_length), cfg.n_train, cfg.n_symbols,
                          cfg.max_length, _excluded_keys([exclude], cfg.n_symbols), "data.n_train")


def make_datasets(cfg: DataConfig) -> tuple[SequenceSet, SequenceSet]:
    """(train, valid), a pure function of cfg. Validation is drawn first, train avoids it."""
    rng = np.random.default_rng(cfg.seed)
    valid = make_validation(cfg, rng)
    make_train = make_train_distinct if cfg.train_sampling == "distinct" else make_train_iid
    train = make_train(cfg, rng, valid)
    return train, valid


def make_das_valid(cfg: DataConfig, train: SequenceSet, valid: SequenceSet) -> SequenceSet:
    """The linear-DAS validation set: cfg.n_das_valid distinct sequences of length cfg.das_length,
    from a seed stream of their own, never in `train` or `valid`."""
    rng = np.random.default_rng([cfg.seed, 9_001])  # a stream make_datasets never uses
    excluded = _excluded_keys([train, valid], cfg.n_symbols)
    return _draw_distinct(rng, (cfg.das_length, cfg.das_length), cfg.n_das_valid, cfg.n_symbols,
                          cfg.max_length, excluded, "data.n_das_valid")


def make_das_train(cfg: DataConfig, train: SequenceSet, das_valid: SequenceSet) -> SequenceSet:
    """Linear DAS's training targets, never in `das_valid`. data.das_train "own" (the authors):
    cfg.n_das_train distinct sequences of length cfg.das_length from a seed stream of their own;
    "model_train": the length-das_length rows of the model's training set `train`."""
    if cfg.das_train == "model_train":
        keep = train.lengths == cfg.das_length
        return SequenceSet(train.tokens[keep], train.lengths[keep])
    rng = np.random.default_rng([cfg.seed, 9_002])  # a stream no other set uses
    return _draw_distinct(rng, (cfg.das_length, cfg.das_length), cfg.n_das_train, cfg.n_symbols,
                          cfg.max_length, _excluded_keys([das_valid], cfg.n_symbols), "data.n_das_train")


def length_mix(data: SequenceSet, cfg: DataConfig) -> dict[int, float]:
    """Share of each length in `data`, for logs and docs."""
    counts = np.bincount(data.lengths, minlength=cfg.max_length + 1)
    return {k: float(counts[k] / max(len(data), 1)) for k in range(cfg.min_length, cfg.max_length + 1)}


def random_sequences(rng: np.random.Generator, n: int, cfg: DataConfig, length: int | None = None):
    """Fresh i.i.d. sequences (for counterfactual data); a fixed `length` if given."""
    if length is None:
        lengths = rng.integers(cfg.min_length, cfg.max_length + 1, size=n).astype(np.int64)
    else:
        lengths = np.full(n, length, dtype=np.int64)
    tokens = rng.integers(0, cfg.n_symbols, size=(n, cfg.max_length)).astype(np.int64)
    positions = np.arange(cfg.max_length)
    return SequenceSet(np.where(positions[None, :] < lengths[:, None], tokens, 0), lengths)


def write_sequences(path: str | Path, data: SequenceSet) -> None:
    """Write one dataset to Parquet (zstd); identical data gives identical bytes."""
    n, width = data.tokens.shape
    mask = np.arange(width)[None, :] < data.lengths[:, None]
    flat = data.tokens[mask].astype(np.int8)  # row-major, so rows stay contiguous
    offsets = np.concatenate([[0], np.cumsum(data.lengths)]).astype(np.int32)
    texts = np.array(list(ALPHABET))[data.tokens]
    text = ["".join(row[:k]) for row, k in zip(texts, data.lengths)]
    table = pa.Table.from_arrays([
        pa.array(np.arange(n, dtype=np.int32)),
        pa.array(data.lengths.astype(np.int8)),
        pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)),
        pa.array(text, type=pa.string()),
    ], schema=DATASET_SCHEMA)
    write_parquet(table, path)


def read_sequences(path: str | Path, max_length: int | None = None) -> SequenceSet:
    """Read a dataset written by write_sequences; checks the schema."""
    missing = {"length", "tokens"} - set(pq.read_schema(path).names)
    if missing:
        raise ValueError(f"{path}: not a sequence dataset (missing columns {sorted(missing)})")
    table = pq.read_table(path, columns=["length", "tokens"])  # not the text column: 1M strings
    lengths = table.column("length").to_numpy().astype(np.int64)
    flat = table.column("tokens").combine_chunks().flatten().to_numpy().astype(np.int64)
    width = max_length or int(lengths.max(initial=1))
    if lengths.max(initial=0) > width:
        raise ValueError(f"{path}: sequences up to length {lengths.max()} exceed max_length {width}")
    if flat.size != lengths.sum():
        raise ValueError(f"{path}: token count does not match the lengths column")
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    tokens = np.zeros((len(lengths), width), dtype=np.int64)
    tokens[rows, cols] = flat
    return SequenceSet(tokens, lengths)


def run_make_dataset(cfg: DataConfig, train_path, valid_path, das_valid_path, das_train_path) -> None:
    """The make_dataset job: the training and validation sets, and linear DAS's validation and
    training sets, to Parquet."""
    log(f"generating datasets: {cfg}")
    train, valid = make_datasets(cfg)
    das_valid = make_das_valid(cfg, train, valid)
    das_train = make_das_train(cfg, train, das_valid)
    write_sequences(valid_path, valid)
    write_sequences(das_valid_path, das_valid)
    write_sequences(das_train_path, das_train)
    write_sequences(train_path, train)
    mix = ", ".join(f"{k}: {100 * v:.2f}%" for k, v in length_mix(train, cfg).items())
    log(f"training length mix ({cfg.train_sampling}): {mix}")
    log(f"wrote {len(train)} training sequences to {train_path}, {len(valid)} to {valid_path} and "
        f"{len(das_valid)} of length {cfg.das_length} to {das_valid_path}; linear DAS trains on "
        f"{len(das_train)} ({cfg.das_train}) in {das_train_path}")
