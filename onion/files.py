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


def migrate_to_cell_layout(root="data") -> list[tuple[Path, Path]]:
    """Move artifacts of the layout before recurrent cells (…/variant=V/size=N/seed=S…) to the
    GRU's place in the current one (…/cell=gru/variant=V/…), keeping their times, so that a finished
    run is found and nothing retrains. Every `variant=*` folder or file whose parent is not a
    `cell=*` folder moves; where the target exists already, the old one stays and is reported.
    Returns the (old, new) moves made."""
    root = Path(root)
    if not root.is_dir():
        return []
    moves = []
    for old in sorted(root.rglob("variant=*")):
        if old.parent.name.startswith("cell=") or any(p.name.startswith("variant=") for p in old.parents):
            continue
        new = old.parent / "cell=gru" / old.name
        if new.exists():
            raise FileExistsError(f"{old} and {new} both exist: remove one (the layout before cells "
                                  "kept GRU artifacts without the cell=gru/ segment)")
        new.parent.mkdir(parents=True, exist_ok=True)
        old.rename(new)
        moves.append((old, new))
    return moves


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
