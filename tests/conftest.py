import numpy as np
import pytest
import torch

from onion.config import DataConfig

torch.set_num_threads(1)


@pytest.fixture
def small_data_cfg():
    """A quick dataset config: the paper's vocabulary and lengths, few sequences."""
    return DataConfig(n_train=20_000, n_valid=500, seed=3)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def no_compiler(monkeypatch):
    """torch.compile replaced by one whose compiled function raises, as where no C++ compiler is
    found: the unrolled loops must fall back to eager and say so."""
    def compile_that_fails(function, **kwargs):
        def fail(*args):
            raise RuntimeError("no C++ compiler found")
        return fail

    monkeypatch.setattr(torch, "compile", compile_that_fails)
