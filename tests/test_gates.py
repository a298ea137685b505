"""Claim 6's measures on hand-made gates whose answer is known by construction."""

import numpy as np

from onion.report.gates import describe, gate_measures, gates_contrast

L = 8


def sharp_staggered(n=64):
    """Channel c is open (1 − z = 1) until step c mod (L - 1), then closed (0): one-step closing at
    seven different steps."""
    steps = np.arange(2 * L)[None, :]
    return (steps <= (np.arange(n) % (L - 1))[:, None]).astype(float)


def gradual_synchronous(n=64):
    """Every channel decays together by 0.8 per step from 1."""
    return np.tile(0.8 ** np.arange(2 * L), (n, 1))


def test_sharp_staggered_gates():
    m = gate_measures(sharp_staggered(), L)
    assert m["sharpness"] == 1.0 and m["channels"] == 64
    closing = np.arange(64) % (L - 1) + 1  # the drop after step c mod 7
    assert np.isclose(m["staggering"], closing.std())
    assert describe(m).startswith("sharp, staggered")


def test_gradual_synchronous_gates():
    m = gate_measures(gradual_synchronous(), L)
    assert np.isclose(m["sharpness"], 0.2) and m["staggering"] == 0.0  # all close at step 1 by 0.2
    assert describe(m).startswith("gradual, synchronous")


def test_sharp_but_synchronous_and_never_open_gates():
    together = np.tile((np.arange(2 * L) < 3).astype(float), (64, 1))  # all close after step 2
    m = gate_measures(together, L)
    assert m["sharpness"] == 1.0 and m["staggering"] == 0.0
    assert gate_measures(np.zeros((64, 2 * L)), L)["channels"] == 0  # never open: nothing measured


def test_contrast_needs_both_models_as_the_paper_describes():
    small, large = gate_measures(gradual_synchronous(), L), gate_measures(sharp_staggered(1024), L)
    assert gates_contrast(small, large)
    assert not gates_contrast(large, small)  # swapped
    assert not gates_contrast(small, small) and not gates_contrast(large, large)


def _trajectory(path, gates, size):
    """A trajectories.parquet of `ab1cadf2` whose 1 − z is `gates` [N, 2L]."""
    import pyarrow as pa

    from onion.files import vector_column, write_parquet
    steps = gates.shape[1]
    write_parquet(pa.table({"variant": ["autoregressive"] * steps, "size": [size] * steps, "seed": [0] * steps,
                            "example_id": [0] * steps, "text": ["ab1cadf2"] * steps, "time": list(range(steps)),
                            "symbol": ["x"] * steps, "z": vector_column(1 - gates.T)}), path)
    return path


def test_summary_judges_claim_6_from_the_trajectories(tmp_path):
    from onion.report.summary import NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, gates_section
    small = _trajectory(tmp_path / "small.parquet", gradual_synchronous(), 64)
    large = _trajectory(tmp_path / "large.parquet", sharp_staggered(1024), 1024)
    mid = _trajectory(tmp_path / "mid.parquet", sharp_staggered(256), 256)
    assert f"**{REPRODUCED}.**" in "\n".join(gates_section((small, large)))
    assert f"**{NOT_REPRODUCED}.**" in "\n".join(gates_section((_trajectory(tmp_path / "s2.parquet", sharp_staggered(), 64), large)))
    text = "\n".join(gates_section((small, mid)))
    assert f"**{NOT_TESTABLE}.**" in text and "N = 256 (autoregressive, seed 0): sharp, staggered" in text
