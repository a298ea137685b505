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
