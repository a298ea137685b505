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


# The longest files, started first so that the two workers of `pytest -n 2 --dist loadfile` (the README's
# command) end together: each file runs whole on one worker, in this order, the rest after them.
LONGEST_FIRST = ("test_workflow.py", "test_probes.py", "test_unrolled.py", "test_interventions.py",
                 "test_full_disk.py")  # measured at 4358e20 (docs/development.md)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: in-file order kept
