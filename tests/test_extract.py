import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from onion.config import DataConfig
from onion.data import encode_text, make_datasets, sequence_keys, sos_token
from onion.extract import (ExtractConfig, final_states, probe_training_sample, read_states, states_table,
                           trajectories_table, trajectory, trajectory_examples)
from onion.files import vectors, write_parquet
from onion.model import RepeatRNN
from onion.toymodels import SlotModel


def _model(variant="autoregressive", size=12):
    torch.manual_seed(0)
    model = RepeatRNN(n_symbols=30, hidden_size=size, variant=variant).eval()
    with torch.no_grad():  # larger weights so that the gates are far from 1/2
        for p in model.rnn.parameters():
            p.mul_(3)
    return model


def _reference_gates(gru, x, h):
    """The GRU equations written out one gate at a time: x [N], h [N] -> (h', r, z, n)."""
    w_ir, w_iz, w_in = gru.weight_ih_l0.chunk(3)
    w_hr, w_hz, w_hn = gru.weight_hh_l0.chunk(3)
    b_ir, b_iz, b_in = gru.bias_ih_l0.chunk(3)
    b_hr, b_hz, b_hn = gru.bias_hh_l0.chunk(3)
    r = torch.sigmoid(w_ir @ x + b_ir + w_hr @ h + b_hr)
    z = torch.sigmoid(w_iz @ x + b_iz + w_hz @ h + b_hz)
    n = torch.tanh(w_in @ x + b_in + r * (w_hn @ h + b_hn))
    return (1 - z) * n + z * h, r, z, n


@pytest.mark.parametrize("variant", ["autoregressive", "no_input"])
def test_trajectory_matches_torch_gru(variant):
    model = _model(variant)
    tokens = encode_text("ab1cadf2")
    run = trajectory(model, tokens)
    length = len(tokens)
    with torch.no_grad():
        # input phase: torch.nn.GRU's own outputs
        expected = model.encode_all(torch.tensor([tokens]))[0].numpy()
        np.testing.assert_allclose(run["h"][:length], expected, atol=1e-5)
        # output phase: feed the same decoder inputs through torch.nn.GRU from h_L
        outputs, _ = model.rnn(model.embedding(torch.tensor([run["token"][length:]])),
                               torch.tensor(expected[-1:])[None])
        np.testing.assert_allclose(run["h"][length:], outputs[0].numpy(), atol=1e-5)
        # greedy decoding: the logged outputs are what generate() produces
        greedy = model.generate(torch.tensor(expected[-1:]), length)[0].tolist()
    assert run["output"][length:] == greedy
    assert run["token"][length] == sos_token(30)
    if variant == "autoregressive":
        assert run["token"][length + 1:] == greedy[:-1]
    # gates: a step-by-step recomputation of the GRU equations
    h = torch.zeros(model.hidden_size)
    with torch.no_grad():
        for t, token in enumerate(run["token"]):
            h, r, z, n = _reference_gates(model.rnn, model.embedding.weight[token], h)
            for key, value in (("h", h), ("r", r), ("z", z), ("n", n)):
                np.testing.assert_allclose(run[key][t], value.numpy(), atol=1e-5, err_msg=f"{key}[{t}]")
    assert 0.05 < run["z"].std()  # the test exercises non-trivial gates


def test_trajectories_parquet_readable_by_pandas_pyarrow_duckdb(tmp_path, small_data_cfg, rng):
    from onion.data import random_sequences
    model = _model()
    valid = random_sequences(rng, 10, small_data_cfg)
    examples = trajectory_examples(ExtractConfig(n_trajectory_examples=3), valid, 30)
    assert examples[0] == encode_text("ab1cadf2") and len(examples) == 4
    path = tmp_path / "trajectories.parquet"
    write_parquet(trajectories_table(model, examples, "autoregressive", 12, 7), path)

    table = pq.read_table(path)
    assert table.num_rows == sum(2 * len(e) for e in examples)
    ztype = table.schema.field("z").type
    assert ztype.list_size == 12 and ztype.value_type == "float32"
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    fig2 = table.filter(pq.filters_to_expression([("text", "=", "ab1cadf2")]))
    run = trajectory(model, examples[0])
    np.testing.assert_array_equal(vectors(fig2, "z"), run["z"])

    df = pd.read_parquet(path)
    first = df[df.example_id == 0]
    assert list(first.phase) == ["input"] * 8 + ["output"] * 8
    assert list(first.symbol[:9]) == list("ab1cadf2") + ["<sos>"]
    np.testing.assert_array_equal(np.stack(first.h), run["h"])
    assert (df["size"] == 12).all() and (df["seed"] == 7).all()

    con = duckdb.connect()
    got = con.execute(f"SELECT h[1], z[12] FROM '{path}' WHERE example_id = 0 ORDER BY time").fetchall()
    np.testing.assert_allclose([g[0] for g in got], run["h"][:, 0], rtol=1e-6)
    np.testing.assert_allclose([g[1] for g in got], run["z"][:, 11], rtol=1e-6)


def test_final_states_round_trip(tmp_path, small_data_cfg, rng):
    from onion.data import random_sequences
    model = _model()
    train, valid = random_sequences(rng, 300, small_data_cfg), random_sequences(rng, 50, small_data_cfg)
    path = tmp_path / "final_states.parquet"
    write_parquet(states_table(model, {"train": train, "valid": valid}, "cpu", "autoregressive", 12, 1,
                               batch_size=64), path)
    for split, data in (("train", train), ("valid", valid)):
        h, seqs, keys = read_states(path, split, max_length=9)
        assert keys == {"variant": "autoregressive", "cell": "gru", "size": 12, "seed": 1}
        np.testing.assert_array_equal(seqs.tokens, data.tokens)
        np.testing.assert_array_equal(seqs.lengths, data.lengths)
        np.testing.assert_allclose(h[:40], _reference_final_states(model, data, 40), atol=1e-5)
        assert h.dtype == np.float32
    counts = duckdb.connect().execute(
        f"SELECT split, count(*), max(len(h)) FROM '{path}' GROUP BY split ORDER BY split").fetchall()
    assert counts == [("train", 300, 12), ("valid", 50, 12)]


def _reference_final_states(model, data, n):
    """h_L of the first n sequences, one token at a time through _reference_gates (independent of
    the model's encode and of the extractor)."""
    out = []
    with torch.no_grad():
        for tokens, length in zip(data.tokens[:n], data.lengths[:n]):
            h = torch.zeros(model.hidden_size)
            for token in tokens[:length]:
                h = _reference_gates(model.rnn, model.embedding.weight[int(token)], h)[0]
            out.append(h.numpy())
    return np.stack(out)


def test_final_states_of_hand_built_model():
    """The slot model's state is known: the code of the token at position p in block p, zeros after L."""
    model = SlotModel()
    tokens = torch.tensor([encode_text("ab1") + [0] * 6])
    h = final_states(model, type("S", (), {"tokens": tokens.numpy(), "lengths": np.array([3]),
                                           "__len__": lambda self: 1})(), "cpu")
    blocks = h.reshape(model.max_length, model.block)
    np.testing.assert_allclose(blocks[:3], model.codes[torch.tensor(encode_text("ab1"))].numpy(), atol=1e-7)
    assert (blocks[3:] == 0).all()


def test_read_states_rejects_wrong_file(tmp_path):
    path = tmp_path / "x.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(path)
    with pytest.raises(ValueError, match="not a final-states file"):
        read_states(path, "train")


def test_figures_from_parquet_and_json(tmp_path):
    from onion.report import figures
    paths = []
    for size in (8, 12):
        path = tmp_path / f"traj{size}.parquet"
        write_parquet(trajectories_table(_model(size=size), [encode_text("ab1cadf2")], "autoregressive",
                                         size, 0), path)
        paths.append(path)
    figures.figure_gates(paths[1], paths[0], [tmp_path / "fig2.pdf", tmp_path / "fig2.png"])
    figures.figure_all_channels(paths[1], [tmp_path / "fig5.png"])
    results = pd.DataFrame({"variant": "autoregressive", "size": 64, "seed": [0, 1, 0, 1],
                            "kind": ["onion", "onion", "linear", "linear"],
                            "exact_match": [0.9, 0.95, 0.01, 0.02]})
    figures.figure_probes(results, [tmp_path / "fig4.pdf"])
    for name in ("fig2.pdf", "fig2.png", "fig5.png", "fig4.pdf"):
        assert (tmp_path / name).stat().st_size > 1000
    with pytest.raises(ValueError, match="no trajectory"):
        figures.gate_matrix(paths[0], text="zzz")


def test_probe_training_sample_has_the_training_sets_length_mix():
    """The distinct set is stored in draw order, so its first rows over-represent short lengths; the
    probes' training states are a uniform sample and keep the whole set's mix (the authors' probes
    stream the whole set)."""
    cfg = DataConfig(n_symbols=4, min_length=2, max_length=6, n_train=4000, n_valid=20, seed=2,
                     das_length=6, n_das_valid=50)
    train, _ = make_datasets(cfg)
    n = 800
    sample = probe_training_sample(train, n, cfg.seed)
    whole = np.bincount(train.lengths, minlength=7) / len(train)
    first = np.bincount(train.lengths[:n], minlength=7) / n
    drawn = np.bincount(sample.lengths, minlength=7) / n
    sd = np.sqrt(whole * (1 - whole) / n)
    assert np.all(np.abs(drawn - whole) < 4 * sd + 1e-9)
    assert np.abs(first - whole).max() > 10 * sd.max()  # the bias the sample avoids is real here
    keys = sequence_keys(sample.tokens, sample.lengths, cfg.n_symbols)
    assert len(np.unique(keys)) == n and np.isin(keys, sequence_keys(train.tokens, train.lengths, 4)).all()
    again = probe_training_sample(train, n, cfg.seed)
    assert np.array_equal(again.tokens, sample.tokens)  # a pure function of (set, n, seed)
    assert probe_training_sample(train, len(train) + 1, cfg.seed) is train
