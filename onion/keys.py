"""Artifact keys: every model and analysis lives at a path that names the settings that made it.

A model of one cell, variant, size and seed trained with other settings is another model, so the
path carries a short key of its training settings (`…/seed=0/train=1a2b3c4d/`), and an analysis
one of its own settings (`intervention-onion-5e6f7a8b.json`). Grids with different settings then
share one data/ folder without retraining or overwriting each other's artifacts. A key is the first
8 hex digits of the SHA-256 of the settings' canonical JSON, leaving out the settings that never
change a result (BOOKKEEPING) and those added later while they hold their former behaviour
(NEUTRAL), so that keys stay stable when a setting is added. Torch-free: the Snakefile and the
report import it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

BOOKKEEPING = ("checkpoint_every", "log_every", "eval_every")
NEUTRAL = {"precision": "fp32", "rotation": "matrix_exp"}  # in a key only when set otherwise
STATE_SETTINGS = ("n_train_states",)  # the extract settings that change the stored final states
KEY = r"[0-9a-f]{8}"

MODEL_KEY = "cell={cell}/variant={variant}/size={size}/seed={seed}/train={train}"
_MODEL = r"cell=(?P<cell>[^/]+)/variant=(?P<variant>[^/]+)/size=(?P<size>\d+)/seed=(?P<seed>\d+)/train=(?P<train>" + KEY + ")"
_RESULT = re.compile(_MODEL + r"/(?P<analysis>intervention|probe)-(?P<kind>[a-z_]+)-(?P<settings>" + KEY + r")\.json$")
_METRICS = re.compile(_MODEL + r"/metrics\.json$")


def settings_key(settings: dict) -> str:
    """The key of a settings dict: 8 hex digits of the SHA-256 of its canonical JSON, without
    BOOKKEEPING and NEUTRAL entries. Lists and tuples hash alike."""
    kept = {k: v for k, v in settings.items() if k not in BOOKKEEPING and NEUTRAL.get(k, ...) != v}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def states_key(extract: dict) -> str:
    """The key of the stored final states: the extract settings that change them."""
    return settings_key({k: extract[k] for k in STATE_SETTINGS})


def probe_key(probe: dict, extract: dict) -> str:
    """A probe's key: its own settings and those of the states it trains on."""
    return settings_key({**probe, **{k: extract[k] for k in STATE_SETTINGS}})


def model_fields(path) -> dict | None:
    """cell, variant, size, seed and train key of a models/…/metrics.json path, or None."""
    match = _METRICS.search(Path(path).as_posix())
    return None if match is None else _typed(match.groupdict())


def result_fields(path) -> dict | None:
    """The fields of an analysis result path (…/train=K/<analysis>-<kind>-<settings>.json): cell,
    variant, size, seed, train, analysis (intervention or probe), kind, settings; None otherwise."""
    match = _RESULT.search(Path(path).as_posix())
    return None if match is None else _typed(match.groupdict())


def _typed(fields: dict) -> dict:
    return {**fields, "size": int(fields["size"]), "seed": int(fields["seed"])}


def present_results(root, analysis: str) -> list[Path]:
    """Every result JSON of `analysis` ('intervention' or 'probe') under root/analyses."""
    return sorted(p for p in Path(root, "analyses").rglob(f"{analysis}-*.json") if result_fields(p))


def present_metrics(root) -> list[Path]:
    """Every trained model's metrics.json under root/models."""
    return sorted(p for p in Path(root, "models").rglob("metrics.json") if model_fields(p))
