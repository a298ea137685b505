"""Frozen configuration dataclasses that reject unknown keys."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from onion.names import DAS_TRAIN_SETS, PRECISIONS, TRAIN_SAMPLINGS

T = TypeVar("T")

# settings added later, at the value that keeps their former behaviour: left out of a checkpoint's
# identity there, so that runs checkpointed before they existed still resume
NEUTRAL = {"precision": "fp32", "rotation": "matrix_exp"}


def from_dict(cls: type[T], values: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass `cls` from a dict, naming any unknown key in the error."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    for f in dataclasses.fields(cls):
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def identity_settings(cfg) -> dict:
    """A config dataclass as the dict a checkpoint's identity holds: every field but the NEUTRAL
    ones at their neutral value."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if NEUTRAL.get(k, ...) != v}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The repeat task's datasets (PAPER.md §2)."""

    n_symbols: int = 30
    min_length: int = 2
    max_length: int = 9
    n_train: int = 1_000_000
    n_valid: int = 5_000
    max_valid_fraction: float = 0.2
    seed: int = 0
    train_sampling: str = "distinct"  # distinct (the authors' generator) or iid (with repeats)
    das_length: int = 9  # length of linear DAS's training targets and of its validation set
    n_das_valid: int = 5_000  # the linear-DAS validation set (authors: 5,000 of length 9)
    das_train: str = "own"  # linear DAS's targets: own (authors: 1M distinct of length 9) or model_train
    n_das_train: int = 1_000_000  # size of linear DAS's own training set

    def __post_init__(self):
        if not 2 <= self.n_symbols <= 36:
            raise ValueError(f"data.n_symbols must be in 2..36, got {self.n_symbols}")
        if not 1 <= self.min_length <= self.max_length <= 12:
            raise ValueError(f"data lengths need 1 <= min_length <= max_length <= 12, got "
                             f"{self.min_length}..{self.max_length}")
        if not 0 < self.max_valid_fraction <= 1:
            raise ValueError(f"data.max_valid_fraction must be in (0, 1], got {self.max_valid_fraction}")
        if self.train_sampling not in TRAIN_SAMPLINGS:
            raise ValueError(f"data.train_sampling must be one of {TRAIN_SAMPLINGS}, got {self.train_sampling!r}")
        if self.das_train not in DAS_TRAIN_SETS:
            raise ValueError(f"data.das_train must be one of {DAS_TRAIN_SETS}, got {self.das_train!r}")
        if not self.min_length <= self.das_length <= self.max_length:
            raise ValueError(f"data.das_length must be in min_length..max_length "
                             f"({self.min_length}..{self.max_length}), got {self.das_length}")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """What every optimisation loop shares (onion.loop): AdamW for `steps` steps of `batch_size`
    examples, checkpointed every `checkpoint_every` steps (0: only the last), a log line every
    `log_every`. `section` names the config section in error messages."""

    section: ClassVar[str] = "optim"
    steps: int = 60_000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    checkpoint_every: int = 2_000
    log_every: int = 1_000

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"{self.section}.steps and {self.section}.batch_size must be positive")


@dataclasses.dataclass(frozen=True)
class TrainConfig(OptimConfig):
    """Optimisation of the GRU on the repeat task (PAPER.md §3)."""

    section: ClassVar[str] = "train"
    steps: int = 40_000
    log_every: int = 500
    eval_every: int = 10_000
    precision: str = "fp32"  # the unrolled kernel's recurrent product: fp32, or bf16 inputs (opt-in)

    def __post_init__(self):
        super().__post_init__()
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
