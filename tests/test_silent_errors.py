"""Never a silent wrong number: stale checkpoints, NaN/Inf and corrupt files are named."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from onion.config import DataConfig, TrainConfig
from onion.data import make_datasets, random_sequences
from onion.files import write_json
from onion.model import RepeatRNN, load_model, save_model
from onion.probes import ProbeConfig, train_probe
from onion.runtime import NonFiniteError, fingerprint
from onion.training import train_model

DATA = DataConfig(n_symbols=6, min_length=2, max_length=4, n_train=3000, n_valid=60, seed=0,
                  train_sampling="iid", das_length=4)
CPU = torch.device("cpu")


def test_training_checkpoint_of_other_data_is_not_resumed(tmp_path, capsys):
    """A run killed with data.seed 1, rerun with data.seed 0, must start over and say why."""
    cfg = TrainConfig(steps=20, batch_size=16, checkpoint_every=10, eval_every=0, log_every=10)
    other_train, other_valid = make_datasets(dataclasses.replace(DATA, seed=1))
    train_model(RepeatRNN(6, 16), other_train, other_valid, cfg, 0, CPU, tmp_path / "ck.pt", stop_after=10)
    capsys.readouterr()
    record = train_model(RepeatRNN(6, 16), *make_datasets(DATA), cfg, 0, CPU, tmp_path / "ck.pt")
    err = capsys.readouterr().err
    assert record["resumed_from"] == 0
    assert "starting over" in err and "(training data differ)" in err, err


def test_probe_checkpoint_of_other_states_is_not_resumed(tmp_path, capsys):
    """A probe killed, then its model retrained: the new states must not resume the old probe."""
    data = random_sequences(np.random.default_rng(0), 500, DataConfig())
    cfg = ProbeConfig(steps=20, checkpoint_every=10, log_every=10)
    old = np.random.default_rng(1).normal(size=(500, 8)).astype(np.float32)
    new = old + 0.01
    train_probe("linear", old, data, 30, cfg, 0, "cpu", tmp_path / "p.pt", stop_after=10)
    capsys.readouterr()
    _, record = train_probe("linear", new, data, 30, cfg, 0, "cpu", tmp_path / "p.pt")
    assert record["resumed_from"] == 0 and "(states differ)" in capsys.readouterr().err
    _, record = train_probe("linear", new, data, 30, cfg, 0, "cpu", tmp_path / "p.pt")
    assert record["resumed_from"] == 20 and record["steps_this_run"] == 0  # the same inputs resume


def test_fingerprint_sees_content_dtype_and_shape():
    a = np.arange(12, dtype=np.int64)
    assert fingerprint(a) == fingerprint(a.copy()) == fingerprint(torch.as_tensor(a))
    assert fingerprint(a) != fingerprint(a.reshape(3, 4)) != fingerprint(a.astype(np.int32))
    b = a.copy()
    b[5] += 1
    assert fingerprint(a) != fingerprint(b)


def test_infinite_learning_rate_stops_training_naming_step_and_cause():
    train, valid = make_datasets(DATA)
    cfg = TrainConfig(steps=5, batch_size=16, lr=float("inf"), eval_every=0, checkpoint_every=0)
    # losses are read back at log steps only (no wait for the GPU each step): the error names the window
    with pytest.raises(NonFiniteError, match=r"training step 1-5/5: the loss is nan; train.lr"):
        train_model(RepeatRNN(6, 16), train, valid, cfg, 0, CPU)


def test_a_diverged_run_never_writes_a_checkpoint(tmp_path):
    train, valid = make_datasets(DATA)
    cfg = TrainConfig(steps=8, batch_size=16, lr=float("inf"), eval_every=0, checkpoint_every=3,
                      log_every=1000)
    with pytest.raises(NonFiniteError, match=r"training step 1-3/8"):  # checked before the checkpoint
        train_model(RepeatRNN(6, 16), train, valid, cfg, 0, CPU, checkpoint_path=tmp_path / "ck.pt")
    assert not (tmp_path / "ck.pt").exists()


def test_nan_states_stop_the_probe_before_training(tmp_path, capsys):
    from onion.cli import main
    from onion.extract import states_table
    from onion.files import write_parquet
    from onion.toymodels import SlotModel
    rng = np.random.default_rng(0)
    cfg = DataConfig()
    table = states_table(SlotModel(), {"train": random_sequences(rng, 300, cfg),
                                       "valid": random_sequences(rng, 50, cfg)}, "cpu", "autoregressive", 45, 0)
    h = np.stack(table.column("h").to_numpy(zero_copy_only=False)).astype(np.float32)
    # NaN in held-out states only: training never sees them, and a prediction from them is still a
    # token, so without the check the probe would train and report a number
    assert (table.column("split").to_numpy(zero_copy_only=False)[300:] == "valid").all()
    h[[303, 307, 311], 0] = np.nan
    import pyarrow as pa
    flat = pa.FixedSizeListArray.from_arrays(pa.array(h.reshape(-1)), h.shape[1])
    table = table.set_column(table.schema.get_field_index("h"), "h", flat)
    states = tmp_path / "states.parquet"
    write_parquet(table, states)
    out, breakdown, checkpoint = tmp_path / "probe.json", tmp_path / "b.parquet", tmp_path / "probe.pt"
    rc = main(["train-probe", "--kind", "linear", "--probes", '{"steps": 5}', "--states", str(states),
               "--device", "cpu", "--out", str(out), "--breakdown", str(breakdown),
               "--checkpoint", str(checkpoint)])
    err = capsys.readouterr().err
    assert rc == 1 and str(states) in err and "NaN" in err and "valid" in err, err
    assert not out.exists() and not breakdown.exists()
    assert not checkpoint.exists()  # stopped before training: the last step is always checkpointed


def test_json_outputs_are_strict(tmp_path):
    with pytest.raises(ValueError, match="non-finite"):
        write_json(tmp_path / "m.json", {"exact_match": float("nan")})
    assert not (tmp_path / "m.json").exists()
    write_json(tmp_path / "m.json", {"exact_match": 0.5})
    assert json.loads((tmp_path / "m.json").read_text()) == {"exact_match": 0.5}


def test_corrupt_model_file_is_named_without_pytorch_advice(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a model")
    with pytest.raises(ValueError) as err:
        load_model(path)
    assert str(path) in str(err.value) and "train_model" in str(err.value)
    assert "weights_only" not in str(err.value)


def test_non_finite_weights_are_never_saved_or_loaded(tmp_path):
    model = RepeatRNN(6, 8)
    save_model(model, tmp_path / "ok.pt")
    with torch.no_grad():
        model.readout.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="readout.weight"):
        save_model(model, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
    blob = torch.load(tmp_path / "ok.pt")
    blob["state_dict"]["readout.weight"][0, 0] = float("nan")
    torch.save(blob, tmp_path / "nan.pt")
    with pytest.raises(NonFiniteError, match="nan.pt"):
        load_model(tmp_path / "nan.pt")


@pytest.mark.parametrize("command", ["extract-states", "extract-trajectories"])
def test_non_finite_states_stop_the_extraction_job(tmp_path, capsys, monkeypatch, command):
    """A model whose recurrence overflows (a NaN in a state; load_model refuses non-finite weights,
    so only arithmetic makes one): the extraction job stops, naming the model, and writes nothing."""
    import onion.extract
    from onion.cli import main
    from onion.data import write_sequences
    encode, step = RepeatRNN.encode, onion.extract.cell_step

    def overflowing_encode(self, tokens, lengths):
        h = encode(self, tokens, lengths)
        h[3, 2] = float("nan")
        return h

    def overflowing_step(model, x, state):
        state = step(model, x, state)
        state["h"][0, 2] = float("nan")
        return state

    save_model(RepeatRNN(6, 8), tmp_path / "model.pt")
    train, valid = make_datasets(DATA)
    write_sequences(tmp_path / "train.parquet", train)
    write_sequences(tmp_path / "valid.parquet", valid)
    monkeypatch.setattr(RepeatRNN, "encode", overflowing_encode)
    monkeypatch.setattr(onion.extract, "cell_step", overflowing_step)
    out = tmp_path / "states.parquet"
    data = ["--train-data", str(tmp_path / "train.parquet")] if command == "extract-states" else []
    rc = main([command, "--model", str(tmp_path / "model.pt"), *data, "--valid-data", str(tmp_path / "valid.parquet"),
               "--out", str(out), "--size", "8", "--device", "cpu", "--data", json.dumps(dataclasses.asdict(DATA)),
               "--extract", '{"n_train_states": 200, "texts": ["0123"]}'])
    err = capsys.readouterr().err
    assert rc == 1 and str(tmp_path / "model.pt") in err and "NaN/Inf" in err, err
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))
