"""Artifacts on disk: every file is written atomically (a killed job never leaves a half-written
file that looks complete), Parquet vector columns, and the data folder's layout. Torch-free (save_torch
imports it when called)."""

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
    without an exception (the one way this package writes a file). A write that fails (a full disk,
    say) leaves `path` as it was, removes the temporary file and raises an OSError that names `path`
    and the cause."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        message = f"cannot write {path} ({err.strerror or err}); it was left as it was: free some space and " \
                  "run again"
        raise (OSError(err.errno, message) if err.errno else OSError(message)) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_torch(obj, path) -> None:
    """torch.save `obj` to `path` atomically. Serialised in memory first: PyTorch's own file writer
    reports a failed write without its cause (a full disk reads "unexpected pos ...")."""
    import io

    import torch
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


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
    """The migrate-layout command: migrate_to_cell_layout, then migrate_to_keyed_layout, with one
    line per move."""
    from onion.log import log
    moves = migrate_to_cell_layout(root) + migrate_to_keyed_layout(root)
    for old, new in moves:
        log(f"moved {old} -> {new}")
    log(f"moved {len(moves)} artifacts to the current layout (cell=…/…/seed=S/train=K/); nothing is "
        "retrained" if moves else f"{root}: nothing to move")


def unkeyed_paths(root="data") -> list[Path]:
    """Artifacts of the layout before settings keys: files directly in a …/seed=S/ folder (today
    they sit in …/seed=S/train=K/). Reads only (the Snakefile calls it, dry runs included)."""
    root = Path(root)
    return sorted(p for part in ("models", "states", "analyses", "checkpoints") if (root / part).is_dir()
                  for p in (root / part).rglob("seed=*/*") if p.is_file() and p.parent.name.startswith("seed="))


def _moved_name(path: Path, train_key: str) -> Path:
    """Where an unkeyed artifact goes under its model's train key (onion.keys)."""
    from onion import keys
    folder = path.parent / f"train={train_key}"
    if path.suffix in (".json", ".parquet") and path.name.startswith(("intervention-", "probe-")):
        record = json.loads(path.with_suffix(".json").read_text())
        if "config" not in record:
            raise ValueError(f"{path.with_suffix('.json')}: no recorded settings, so no key; delete it "
                             "and its .parquet to recompute it")
        key = keys.settings_key(record["config"]) if path.name.startswith("intervention-") else \
            keys.probe_key(record["config"], {"n_train_states": record["n_train_states"]})
        return folder / f"{path.stem}-{key}{path.suffix}"
    if path.name == "final_states.parquet":
        split = pq.read_table(path, columns=["split"]).column("split").to_pylist()
        return folder / f"final_states-{keys.states_key({'n_train_states': split.count('train')})}.parquet"
    return folder / path.name


def migrate_to_keyed_layout(root="data") -> list[tuple[Path, Path]]:
    """Move the artifacts unkeyed_paths finds under their settings keys (`python -m onion
    migrate-layout`): a model under the key of the training settings its metrics.json records, an
    analysis under its model's and its own recorded settings, final states under their count of
    training states. Checkpoints of the old layout are removed (a job that was running restarts).
    Everything is checked before anything moves. Returns the (old, new) moves made."""
    from onion import keys
    root = Path(root)
    train_keys, plan = {}, []
    for metrics in sorted((root / "models").rglob("seed=*/metrics.json")) if (root / "models").is_dir() else []:
        record = json.loads(metrics.read_text())
        if "config" not in record:
            raise ValueError(f"{metrics}: no recorded training settings, so no key; retrain it "
                             "(delete its folder) or add them")
        train_keys[metrics.parent.relative_to(root / "models")] = keys.settings_key(record["config"])
    for path in unkeyed_paths(root):
        if path.parts[len(root.parts)] == "checkpoints":
            plan.append((path, None))
            continue
        model = path.parent.relative_to(root / path.parts[len(root.parts)])
        if model not in train_keys:
            raise ValueError(f"{path}: its model ({root / 'models' / model}) has no metrics.json, so "
                             "its training settings are unknown; delete it to recompute it")
        if path.suffix == ".parquet" and path.name.startswith(("intervention-", "probe-")) \
                and not path.with_suffix(".json").exists():
            plan.append((path, None))  # parameters of an unfinished analysis
            continue
        plan.append((path, _moved_name(path, train_keys[model])))
    for old, new in plan:
        if new is not None and new.exists():
            raise FileExistsError(f"{old} and {new} both exist: remove one")
    for old, new in plan:
        if new is None:
            old.unlink()
        else:
            new.parent.mkdir(parents=True, exist_ok=True)
            old.rename(new)
    return [(old, new) for old, new in plan if new is not None]
