"""Known answers for the MLP probe (PAPER.md §5, §7): a hand-built model it must read, and one it
reads where a linear probe cannot. Probes train on the models' final states directly (no Parquet)."""

import itertools

import numpy as np
import torch

from onion.config import DataConfig
from onion.data import SequenceSet, random_sequences
from onion.probes import ProbeConfig, evaluate_probe, train_probe
from onion.toymodels import OnionModel, SlotModel

torch.set_num_threads(1)

CFG = ProbeConfig(steps=2000, lr=1e-2, lr_schedule="cosine", log_every=2000)


def _states(model, data: SequenceSet) -> np.ndarray:
    with torch.no_grad():
        return model.encode(torch.as_tensor(data.tokens), torch.as_tensor(data.lengths)).numpy()  # [n, N]


def _fit(kind, model, train: SequenceSet, valid: SequenceSet, seed: int = 0) -> dict:
    probe, _ = train_probe(kind, _states(model, train), train, 30, CFG, seed=seed, device="cpu")
    return evaluate_probe(probe, _states(model, valid), valid, "cpu")


def test_mlp_probe_reads_the_slot_model():
    """Every position in its own block of coordinates: linearly readable (tests/test_probes.py), so
    the MLP, whose ReLUs can pass bounded codes on unchanged, must read it too. Measured at this
    budget, probe seeds 0, 1, 2 (data seeds 100-102): 0.978, 0.974, 0.972; position 8, seen in one
    sequence in eight, is the weakest (0.90-0.93)."""
    rng = np.random.default_rng(100)
    cfg = DataConfig()  # lengths 2..9
    train, valid = random_sequences(rng, 20_000, cfg), random_sequences(rng, 2_000, cfg)
    summary = _fit("mlp", SlotModel(), train, valid)
    assert summary["exact_match"] >= 0.95, summary


def test_mlp_probe_reads_the_onion_model_where_a_linear_probe_cannot():
    """The γ = 0.4 onion model on length-2 sequences: h = e(x_0) + 0.4·e(x_1), e orthonormal, so the
    coordinates c = (e_a·h)_a are 1 for x_0, 0.4 for x_1 (1.4 when x_0 = x_1), 0 elsewhere.

    Linear: with the bias folded into W (Σ c = 1.4 always), the logits at position 1 are W c for a
    free W [30, 30]. For distinct i, j, z, reading (i, j) right against z and (i, z) right against j
    needs W_jj + W_zz > W_jz + W_zj; reading (j, z) and (z, j) right needs the reverse: no linear probe
    reads every sequence. It reads position 0 and guesses position 1.
    MLP: position 1 wants a logit not monotone in c_a (0.4 above 1 and 0, 1.4 above 0), a few ReLUs
    per symbol; its N = 64 hidden units give two each (at N = 32, one: 0.945 at 4,000 steps).

    All 900 sequences train and score the probes (a larger sample would repeat them). Measured at this
    budget, probe seeds 0, 1, 2: MLP 0.990, 0.993, 0.977; linear 0.033 each, chance (1/30) at position 1
    and 1.0 at position 0."""
    pairs = np.array(list(itertools.product(range(30), repeat=2)))  # [900, 2]
    every = SequenceSet(pairs, np.full(len(pairs), 2))
    model = OnionModel(hidden_size=64, gamma=0.4)
    mlp = _fit("mlp", model, every, every)
    assert mlp["exact_match"] >= 0.95, mlp
    linear = _fit("linear", model, every, every)
    assert linear["exact_match"] <= 0.1 and linear["per_position"][0] == 1.0, linear
