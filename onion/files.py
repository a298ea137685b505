"""Artifacts on disk: every file is written atomically (a killed job never leaves a half-written
file that looks complete), Parquet vector columns, and the data folder's layout. Torch-free."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` to write to; it becomes `path` only if the block ends
    without an exception (the one way this package writes a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def write_parquet(table: pa.Table, path) -> None:
    """zstd-compressed Parquet; identical tables give identical bytes."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def vector_column(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """[rows, N] float -> a FixedSizeListArray of float32 with list size N (one cell per row)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def vectors(table: pa.Table, column: str = "h") -> np.ndarray:
    """A fixed-size-list column back to a writable [rows, N] float32 array (no per-row Python)."""
    col = table.column(column).combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return np.array(flat, dtype=np.float32).reshape(len(col), col.type.list_size)


def write_json(path, record: dict) -> None:
    """Strict JSON: a NaN or Inf anywhere in `record` is an error, and nothing is written."""
    try:
        text = json.dumps(record, indent=2, allow_nan=False)
    except ValueError as err:
        raise ValueError(f"{path}: refusing to write a non-finite number ({err})") from err
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def old_layout_paths(root="data") -> list[Path]:
    """Artifacts of the layout before recurrent cells (…/variant=V/size=N/seed=S…, no `cell=`
    segment): every `variant=*` folder or file under `root` whose parent is not a `cell=*` folder.
    Reads only (the Snakefile calls it, dry runs included)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [p for p in sorted(root.rglob("variant=*"))
            if not p.parent.name.startswith("cell=")
            and not any(q.name.startswith("variant=") for q in p.parents)]


def migrate_to_cell_layout(root="data") -> list[tuple[Path, Path]]:
    """Move the artifacts old_layout_paths finds to the GRU's place in the current layout
    (…/cell=gru/variant=V/…), keeping their times, so that a finished run is found and nothing
    retrains (`python -m onion migrate-layout`). Where the target exists already, stop with both
    paths before moving anything more. Returns the (old, new) moves made."""
    moves = []
    for old in old_layout_paths(root):
        new = old.parent / "cell=gru" / old.name
        if new.exists():
            raise FileExistsError(f"{old} and {new} both exist: remove one (the layout before cells "
                                  "kept GRU artifacts without the cell=gru/ segment)")
        new.parent.mkdir(parents=True, exist_ok=True)
        old.rename(new)
        moves.append((old, new))
    return moves


def run_migrate_layout(root="data") -> None:
    """The migrate-layout command: migrate_to_cell_layout with one line per move."""
    from onion.log import log
    moves = migrate_to_cell_layout(root)
    for old, new in moves:
        log(f"moved {old} -> {new}")
    log(f"moved {len(moves)} artifacts of the layout before recurrent cells under cell=gru/; "
        "nothing is retrained" if moves else f"{root}: nothing to move")


def models_trained_otherwise(root, keys, train: dict) -> list[str]:
    """The model keys (cell=…/variant=…/size=…/seed=…) under root/models whose metrics.json records
    other training settings than `train` (the steps, and every setting where the file has them),
    each with what differs: the models a run with `train` would retrain and overwrite."""
    found = []
    for key in keys:
        path = Path(root) / "models" / key / "metrics.json"
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        recorded = record.get("config") or {"steps": record.get("training", {}).get("steps")}
        differ = [f"{name} {value} (here {train.get(name)})" for name, value in recorded.items()
                  if name in train and value is not None and value != train[name]]
        if differ:
            found.append(f"{key}: trained with {', '.join(differ)}")
    return found
