"""Writing artifacts atomically: a killed job never leaves a half-written file that looks complete."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def _temporary(path) -> tuple[Path, Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, path.with_name(path.name + ".tmp")


def write_parquet(table: pa.Table, path) -> None:
    """zstd-compressed Parquet; identical tables give identical bytes."""
    path, tmp = _temporary(path)
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


def write_json(path, record: dict) -> None:
    """Strict JSON: a NaN or Inf anywhere in `record` is an error, and nothing is written."""
    try:
        text = json.dumps(record, indent=2, allow_nan=False)
    except ValueError as err:
        raise ValueError(f"{path}: refusing to write a non-finite number ({err})") from err
    path, tmp = _temporary(path)
    tmp.write_text(text + "\n")
    tmp.replace(path)
