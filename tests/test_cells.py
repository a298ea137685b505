"""Recurrent cells beyond the GRU: shapes, the state the decoder starts from, step-by-step gates
against torch.nn's own kernels, training, Parquet round trips, and every analysis on every cell."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from onion.config import DataConfig, TrainConfig
from onion.data import SequenceSet, encode_text, make_datasets
from onion.extract import read_states, states_table, trajectories_table, trajectory
from onion.files import vectors
from onion.files import write_parquet
from onion.interventions import InterventionConfig, parameter_table, train_intervention
from onion.model import GATES, RepeatRNN, load_model, save_model
from onion.names import CELLS
from onion.probes import ProbeConfig, train_probe
from onion.training import train_model

CPU = torch.device("cpu")
TINY = DataConfig(n_symbols=6, min_length=2, max_length=4, n_train=3000, n_valid=100, seed=0,
                  train_sampling="iid", das_length=4)


def _model(cell, variant="autoregressive", size=10):
    torch.manual_seed(0)
    model = RepeatRNN(30, size, variant, cell).eval()
    with torch.no_grad():  # larger weights so that the gates are far from 1/2
        for p in model.rnn.parameters():
            p.mul_(3)
    return model


@pytest.mark.parametrize("cell", CELLS)
def test_state_shapes_and_decoder_start(cell):
    model = _model(cell)
    tokens = torch.randint(0, 30, (5, 9))
    lengths = torch.tensor([2, 9, 4, 7, 9])
    state = model.encode(tokens, lengths)
    assert state.shape == (5, model.state_size)
    assert model.state_size == (20 if cell == "lstm" else 10)
    assert model.generate(state, 9).shape == (5, 9)
    # padding after L changes nothing: the state of a row equals that of the row alone
    alone = model.encode(tokens[:1, :2], lengths[:1])
    torch.testing.assert_close(state[:1], alone)
    # the final state is the step-by-step state at each row's last token (the LSTM encodes packed)
    torch.testing.assert_close(state, model.encode_all(tokens)[torch.arange(5), lengths - 1])
    # decode starts the layer from exactly this state
    torch.testing.assert_close(model.flat_state(model.layer_state(state)), state)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("variant", ["autoregressive", "no_input"])
def test_step_by_step_gates_match_torch_kernels(cell, variant):
    model = _model(cell, variant)
    tokens = encode_text("ab1cadf2")
    run = trajectory(model, tokens)
    length = len(tokens)
    assert set(GATES[cell]) <= set(run) and run["h"].shape == (2 * length, 10)
    with torch.no_grad():
        states = model.encode_all(torch.tensor([tokens]))[0]  # [L, state_size]
        np.testing.assert_allclose(run["h"][:length], states[:, :10].numpy(), atol=1e-5)
        if cell == "lstm":  # the cell state, as nn.LSTM carries it
            np.testing.assert_allclose(run["c"][:length], states[:, 10:].numpy(), atol=1e-5)
        outputs, _ = model.rnn(model.embedding(torch.tensor([run["token"][length:]])),
                               model.layer_state(states[-1:]))
        np.testing.assert_allclose(run["h"][length:], outputs[0].numpy(), atol=1e-5)
        assert run["output"][length:] == model.generate(states[-1:], length)[0].tolist()
    if cell == "lstm":
        c_prev = np.vstack([np.zeros((1, 10)), run["c"][:-1]])
        np.testing.assert_allclose(run["c"], run["f"] * c_prev + run["i"] * run["g"], atol=1e-5)
        np.testing.assert_allclose(run["h"], run["o"] * np.tanh(run["c"]), atol=1e-5)
        assert 0.05 < run["f"].std()


@pytest.mark.parametrize("cell", CELLS)
def test_each_cell_learns_the_tiny_repeat_task_and_round_trips(cell, tmp_path):
    from onion.evaluation import evaluate_model
    train, valid = make_datasets(TINY)
    torch.manual_seed(0)
    model = RepeatRNN(TINY.n_symbols, 32, "autoregressive", cell)
    cfg = TrainConfig(steps=600, batch_size=64, lr=3e-3, eval_every=0, checkpoint_every=0, log_every=300)
    record = train_model(model, train, valid, cfg, seed=0, device=CPU)
    assert np.isfinite(record["final_loss"])
    accuracy = evaluate_model(model, valid, CPU)["exact_match"]
    assert accuracy > 0.3, (cell, accuracy)  # chance is ~0.001
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.cell == cell and evaluate_model(loaded, valid, CPU)["exact_match"] == accuracy


def test_model_files_from_before_cells_load_as_gru(tmp_path):
    model = _model("gru")
    old = {k.replace("rnn.", "gru.", 1) if k.startswith("rnn.") else k: v for k, v in model.state_dict().items()}
    hyper = {k: v for k, v in model.hyperparameters().items() if k != "cell"}
    torch.save({"hyperparameters": hyper, "state_dict": old, "extra": {}}, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    assert loaded.cell == "gru"
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)


@pytest.mark.parametrize("cell", CELLS)
def test_parquet_gates_and_states_per_cell(cell, tmp_path):
    model = _model(cell)
    table = trajectories_table(model, [encode_text("ab1c")], "autoregressive", 10, 0)
    assert [c for c in table.column_names if c in ("h", "c", "z", "r", "n", "i", "f", "g", "o")] == list(GATES[cell])
    write_parquet(table, tmp_path / "traj.parquet")
    back = pq.read_table(tmp_path / "traj.parquet")
    for column in GATES[cell]:
        assert vectors(back, column).shape == (8, 10)
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 10, 50)
    tokens = rng.integers(0, 30, (50, 9)) * (np.arange(9)[None, :] < lengths[:, None])
    data = SequenceSet(tokens, lengths)
    write_parquet(states_table(model, {"valid": data}, CPU, "autoregressive", 10, 0), tmp_path / "s.parquet")
    h, back_data, _ = read_states(tmp_path / "s.parquet", "valid", 9)
    assert h.shape == (50, model.state_size)
    np.testing.assert_allclose(h[:20], _reference_states(model, tokens[:20], lengths[:20]), atol=1e-5)


def _reference_states(model, tokens, lengths):
    """The final state of each sequence from each cell's equations written out here, one token at a
    time (independent of the model's encode and of onion.model.cells): [B, state_size]."""
    rnn, n = model.rnn, model.hidden_size
    out = []
    with torch.no_grad():
        for row, length in zip(tokens, lengths):
            h, c = torch.zeros(n), torch.zeros(n)
            for token in row[:length]:
                x = model.embedding.weight[int(token)]
                gi = rnn.weight_ih_l0 @ x + rnn.bias_ih_l0
                gh = rnn.weight_hh_l0 @ h + rnn.bias_hh_l0
                if model.cell == "gru":
                    r = torch.sigmoid(gi[:n] + gh[:n])
                    z = torch.sigmoid(gi[n:2 * n] + gh[n:2 * n])
                    new = torch.tanh(gi[2 * n:] + r * gh[2 * n:])
                    h = (1 - z) * new + z * h
                elif model.cell == "lstm":
                    i, f, g, o = (gi + gh).chunk(4)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                else:
                    h = torch.tanh(gi + gh)
            out.append(torch.cat([h, c]) if model.cell == "lstm" else h)
    return torch.stack(out).numpy()


def test_interventions_and_probes_act_on_the_lstm_state():
    model = _model("lstm")
    for p in model.parameters():
        p.requires_grad_(False)
    train, _ = make_datasets(DataConfig(n_train=2000, n_valid=50, seed=0))
    cfg = InterventionConfig(steps=3, batch_size=16, checkpoint_every=0, log_every=3)
    for kind in ("linear_unigram", "onion"):
        intervention, record = train_intervention(model, kind, train, cfg, 0, CPU, 9,
                                                  das_length=9 if kind.startswith("linear") else None)
        assert record["finished"]
        if kind == "onion":  # one row per state channel: [h; c] has 2N
            assert parameter_table(intervention, kind, "autoregressive", 10, 0).num_rows == 20
        else:  # the rotation acts on the 2N-dimensional state
            assert intervention.rotation.weight.shape == (20, 20)
    with torch.no_grad():
        h = model.encode(torch.as_tensor(train.tokens[:500]), torch.as_tensor(train.lengths[:500])).numpy()
    probe, record = train_probe("onion", h, SequenceSet(train.tokens[:500], train.lengths[:500]), 30,
                                ProbeConfig(steps=3, batch_size=16, checkpoint_every=0, log_every=3), 0, CPU)
    assert record["finished"] and probe.g.shape == (20,)


def _results(cell, seed, base, uni, bi, onion, linear_probe, onion_probe):
    import pandas as pd
    keys = {"cell": cell, "variant": "autoregressive", "size": 48, "seed": seed}
    base_rows = pd.DataFrame([{**keys, "exact_match": base}])
    interventions = pd.DataFrame([{**keys, "kind": k, "exact_match": v} for k, v in
                                  [("linear_unigram", uni), ("linear_bigram", bi), ("onion", onion),
                                   ("onion_control", 0.1)]])
    probes = pd.DataFrame([{**keys, "kind": k, "exact_match": v} for k, v in
                           [("linear", linear_probe), ("mlp", 0.02), ("onion", onion_probe),
                            ("gru_autoregressive", 0.97), ("gru_no_input", 0.1)]])
    return base_rows, interventions, probes


def test_onion_signature_verdicts_by_the_papers_bands(tmp_path):
    import pandas as pd

    from onion.report.cell_comparison import ABSENT, PRESENT, cells_table, signature, write_cells_table
    parts = [_results("gru", s, 0.95, 0.0, 0.01, 0.85, 0.01, 0.93) for s in (0, 1)]  # the paper's GRU
    parts += [_results("rnn_tanh", s, 0.96, 0.95, 0.97, 0.5, 0.9, 0.99) for s in (0, 1)]  # linear storage
    parts += [_results("lstm", s, 0.30, 0.0, 0.0, 0.1, 0.0, 0.1) for s in (0, 1)]  # did not learn
    parts += [_results("gru_edge", 0, 0.95, 0.06, 0.01, 0.85, 0.01, 0.93)]  # unigram 0.06 > 0.00 + 0.05
    base, interventions, probes = (pd.concat([p[i] for p in parts]) for i in range(3))
    table = cells_table(base, interventions, probes)
    row = table[(table["cell"] == "gru") & (table["method"] == "intervention onion")].iloc[0]
    assert row["seeds"] == 2 and row["per_seed"] == "0:0.850, 1:0.850"
    verdicts = {v["cell"]: v["verdict"] for v in signature(table)}
    assert verdicts["gru"] == PRESENT
    assert verdicts["rnn_tanh"] == ABSENT
    assert verdicts["lstm"].startswith("not judged: the model did not learn")
    assert verdicts["gru_edge"] == ABSENT
    write_cells_table(table, tmp_path / "t.md", tmp_path / "t.csv", tmp_path / "t.tex")
    assert "| lstm | autoregressive | probe onion |" in (tmp_path / "t.md").read_text()


def test_artifacts_of_the_layout_before_cells_move_to_cell_gru(tmp_path):
    import os

    from onion.files import migrate_to_cell_layout
    data = tmp_path / "data"
    old = [data / "models/variant=autoregressive/size=48/seed=0/model.pt",
           data / "logs/train_model/variant=no_input/size=64/seed=1.log",
           data / "analyses/variant=autoregressive/size=48/seed=0/probe-onion.json"]
    kept = [data / "models/cell=lstm/variant=autoregressive/size=48/seed=0/model.pt",
            data / "datasets/train.parquet"]
    for path in old + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(path.name)
        os.utime(path, (1000, 1000))
    moves = migrate_to_cell_layout(data)
    assert len(moves) == 3
    for path in old:
        new = Path(str(path).replace("/variant=", "/cell=gru/variant=", 1))
        assert new.read_text() == path.name and new.stat().st_mtime == 1000 and not path.exists()
    assert all(path.exists() for path in kept)
    assert migrate_to_cell_layout(data) == []  # idempotent
    clash = data / "states/variant=autoregressive/size=48/seed=0/final_states.parquet"
    for path in (clash, Path(str(clash).replace("/variant=", "/cell=gru/variant=", 1))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    with pytest.raises(FileExistsError, match="both exist"):
        migrate_to_cell_layout(data)


def test_unkeyed_artifacts_move_under_their_recorded_settings(tmp_path):
    """The layout before settings keys: each model moves under the key of the training settings its
    metrics.json records, each analysis under its own recorded settings, final states under the key
    of their count of training states; old checkpoints go; a model without recorded settings stops
    the migration before anything moves."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from onion.files import migrate_to_keyed_layout, unkeyed_paths
    from onion.keys import probe_key, settings_key, states_key
    data = tmp_path / "data"
    model = "cell=gru/variant=autoregressive/size=48/seed=0"
    train = {"steps": 40000, "batch_size": 256, "lr": 0.001, "checkpoint_every": 2000}
    onion_cfg = {"steps": 6000, "lr": 0.003}
    probe_cfg = {"steps": 6000, "lr": 0.03, "lr_schedule": "cosine"}
    files = {f"models/{model}/metrics.json": {"config": train},
             f"models/{model}/model.pt": None,
             f"analyses/{model}/intervention-onion.json": {"config": onion_cfg},
             f"analyses/{model}/intervention-onion.parquet": None,
             f"analyses/{model}/probe-mlp.json": {"config": probe_cfg, "n_train_states": 3},
             f"states/{model}/trajectories.parquet": None,
             f"checkpoints/{model}/train.pt": None}
    for name, record in files.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text(json.dumps(record) if record else name)
    pq.write_table(pa.table({"split": ["train"] * 3 + ["valid"] * 2}), data / f"states/{model}/final_states.parquet")
    assert len(unkeyed_paths(data)) == 8
    (data / f"models/{model}/metrics.json").write_text("{}")
    with pytest.raises(ValueError, match="no recorded training settings"):
        migrate_to_keyed_layout(data)
    assert len(unkeyed_paths(data)) == 8  # nothing moved
    (data / f"models/{model}/metrics.json").write_text(json.dumps({"config": train}))
    moves = migrate_to_keyed_layout(data)
    key = f"train={settings_key(train)}"
    assert settings_key(train) == settings_key({**train, "checkpoint_every": 1})  # bookkeeping: no key
    expected = {f"models/{model}/{key}/metrics.json", f"models/{model}/{key}/model.pt",
                f"analyses/{model}/{key}/intervention-onion-{settings_key(onion_cfg)}.json",
                f"analyses/{model}/{key}/intervention-onion-{settings_key(onion_cfg)}.parquet",
                f"analyses/{model}/{key}/probe-mlp-{probe_key(probe_cfg, {'n_train_states': 3})}.json",
                f"states/{model}/{key}/trajectories.parquet",
                f"states/{model}/{key}/final_states-{states_key({'n_train_states': 3})}.parquet"}
    assert {new.relative_to(data).as_posix() for _, new in moves} == expected
    assert all((data / name).exists() for name in expected)
    assert unkeyed_paths(data) == [] and not (data / f"checkpoints/{model}/train.pt").exists()
    assert migrate_to_keyed_layout(data) == []  # idempotent
