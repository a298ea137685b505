import json

import numpy as np
import pandas as pd
import pytest
import torch

from onion.cli import main
from onion.config import DataConfig
from onion.data import random_sequences
from onion.extract import read_states, states_table
from onion.files import write_parquet
from onion.loop import BOOKKEEPING
from onion.names import PROBE_KINDS
from onion.probes import OnionProbe, ProbeConfig, evaluate_probe, make_probe, onion_scales, train_probe
from onion.toymodels import OnionModel, SlotModel


def _states_file(tmp_path, model, cfg, rng, n_train=20_000, n_valid=1_000):
    """Final states of a hand-built model written to Parquet: the probes read them from there."""
    train, valid = random_sequences(rng, n_train, cfg), random_sequences(rng, n_valid, cfg)
    path = tmp_path / "final_states.parquet"
    write_parquet(states_table(model, {"train": train, "valid": valid}, "cpu", "autoregressive",
                               model.hidden_size, 0), path)
    return path


def _fit(path, kind, cfg):
    h, train, _ = read_states(path, "train", 9)
    h_valid, valid, _ = read_states(path, "valid", 9)
    probe, record = train_probe(kind, h, train, 30, cfg, seed=0, device="cpu")
    return evaluate_probe(probe, h_valid, valid, "cpu"), probe, record


def test_onion_probe_reads_the_hand_built_onion_model(tmp_path, small_data_cfg, rng):
    # γ = 0.4 leaves the last of 9 tokens at 0.4^8 ≈ 7e-4 of the first: the peeling must be precise,
    # which a decaying learning rate gives in a few thousand steps. Weight decay on the probe's
    # scales (the authors' default) pulls γ, g, β, b towards 0 and costs that precision: at this
    # budget 0.92 with decay on every parameter (0.956 at 16,000 steps), 0.96 with decay on the
    # matrices only. The test is about the probe, so it takes the faster of the two.
    path = _states_file(tmp_path, OnionModel(gamma=0.4), small_data_cfg, rng)
    cfg = ProbeConfig(steps=8000, lr=1e-2, lr_schedule="cosine", log_every=2000, weight_decay_on="matrices")
    summary, probe, _ = _fit(path, "onion", cfg)
    assert summary["exact_match"] >= 0.95, summary
    gamma = np.median(onion_scales(probe)["gamma"])
    assert abs(gamma - 0.4) < 0.02  # the probe recovers the model's decay


def test_linear_probe_reads_the_slot_model(tmp_path, small_data_cfg, rng):
    path = _states_file(tmp_path, SlotModel(), small_data_cfg, rng)
    summary, _, _ = _fit(path, "linear", ProbeConfig(steps=4000, lr=1e-2, log_every=2000))
    assert summary["exact_match"] >= 0.95, summary


def test_linear_probe_fails_on_the_onion_model(tmp_path, small_data_cfg, rng):
    # the contrast the paper draws: position magnitudes, not subspaces, defeat a linear read-out
    path = _states_file(tmp_path, OnionModel(gamma=0.4), small_data_cfg, rng)
    summary, _, _ = _fit(path, "linear", ProbeConfig(steps=4000, lr=1e-2, log_every=2000))  # as the slot model
    assert summary["exact_match"] < 0.5
    assert summary["per_position"][0] > 0.95  # the outermost layer is linearly readable


@pytest.mark.parametrize("kind", PROBE_KINDS)
def test_probe_shapes_and_loss(kind):
    torch.manual_seed(0)
    probe = make_probe(kind, hidden_size=16, n_symbols=30, max_length=9)
    h = torch.randn(5, 16)
    tokens = torch.randint(0, 30, (5, 9))
    lengths = torch.tensor([2, 9, 5, 3, 7])
    loss = probe.loss(h, tokens, lengths)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert probe.predict(h).shape == (5, 9)


def test_onion_probe_teacher_forcing_and_scales():
    probe = OnionProbe(hidden_size=8, n_symbols=30, max_length=9)
    s = probe.scales().detach()
    t = torch.arange(9.0)[:, None]
    torch.testing.assert_close(s, 0.9 ** t + 0.1 * t + 0 * s)  # g=1, γ=0.9, β=0.1, b=0 at init
    h = torch.randn(3, 8)
    tokens = torch.randint(0, 30, (3, 9))
    with torch.no_grad():
        forced = probe.run(h, tokens)
        # by hand: the classifier sees h minus the scaled embeddings of the true earlier tokens
        rest = h - (s[:4, None] * probe.embedding(tokens[:, :4]).transpose(0, 1)).sum(0)
        torch.testing.assert_close(forced[:, 4], probe.classifier(rest))
        # every position, against peeling one true token at a time
        rest = h
        for t in range(9):
            torch.testing.assert_close(forced[:, t], probe.classifier(rest))
            rest = rest - s[t] * probe.embedding(tokens[:, t])


def test_resume_gives_the_same_probe(tmp_path, small_data_cfg, rng):
    train = random_sequences(rng, 2000, small_data_cfg)
    h = np.random.default_rng(1).normal(size=(2000, 16)).astype(np.float32)
    cfg = ProbeConfig(steps=40, checkpoint_every=20, log_every=20)
    ck = tmp_path / "probe.pt"
    full, expected = train_probe("gru_autoregressive", h, train, 30, cfg, seed=3, device="cpu")
    train_probe("gru_autoregressive", h, train, 30, cfg, seed=3, device="cpu", checkpoint_path=ck,
                stop_after=20)
    assert ck.exists()
    resumed, record = train_probe("gru_autoregressive", h, train, 30, cfg, seed=3, device="cpu",
                                  checkpoint_path=ck)
    assert record["resumed_from"] == 20
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert evaluate_probe(full, h, train, "cpu") == evaluate_probe(resumed, h, train, "cpu")
    # the finished probe stays checkpointed: a rerun (a group job retried whole) does no step
    again, record = train_probe("gru_autoregressive", h, train, 30, cfg, seed=3, device="cpu",
                                checkpoint_path=ck)
    assert record["resumed_from"] == 40 and record["steps_this_run"] == 0 and record["finished"]
    assert {k: v for k, v in record.items() if k not in BOOKKEEPING} == \
        {k: v for k, v in expected.items() if k not in BOOKKEEPING}  # the final loss included
    for a, b in zip(resumed.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_cli_train_probe_writes_json_and_parquet(tmp_path, small_data_cfg, rng):
    path = _states_file(tmp_path, SlotModel(), small_data_cfg, rng, n_train=2000, n_valid=200)
    out, breakdown = tmp_path / "probe-onion.json", tmp_path / "probe-onion.parquet"
    rc = main(["train-probe", "--kind", "onion", "--probes", json.dumps({"steps": 20, "log_every": 10}),
               "--states", str(path), "--device", "cpu", "--threads", "1",
               "--out", str(out), "--breakdown", str(breakdown)])
    assert rc == 0
    record = json.loads(out.read_text())
    assert {"variant", "size", "seed", "kind", "exact_match", "per_position", "scales"} <= set(record)
    assert np.array(record["scales"]["s"]).shape == (9, 45)
    table = pd.read_parquet(breakdown)
    assert set(table.breakdown) == {"position", "length"}
    assert (table.probe == "onion").all() and (table["size"] == 45).all()


def test_probe_config_rejects_unknown_keys():
    from onion.config import from_dict
    with pytest.raises(ValueError, match="unknown key"):
        from_dict(ProbeConfig, {"stepz": 3}, "probes")
    with pytest.raises(ValueError, match="lr_schedule"):
        ProbeConfig(lr_schedule="linear")


@pytest.mark.parametrize("kind", ["linear", "onion", "gru_autoregressive"])
def test_probe_loop_is_bit_identical_to_a_per_step_loop(kind):
    """Indices uploaded in chunks and losses read at log steps only: on the CPU the probe is bit for
    bit the one a loop drawing and reading back every step trains."""
    from torch.nn.functional import cross_entropy

    from onion.probes import make_probe
    from onion.probes.train import batch_indices
    rng = np.random.default_rng(0)
    h = rng.normal(size=(600, 12)).astype(np.float32)
    data = random_sequences(rng, 600, DataConfig(n_symbols=5, max_length=4, das_length=4))
    cfg = ProbeConfig(steps=30, batch_size=16, lr_schedule="cosine", log_every=10, checkpoint_every=0)
    ours, _ = train_probe(kind, h, data, 5, cfg, seed=3, device="cpu")
    torch.manual_seed(3)
    ref = make_probe(kind, 12, 5, 4)
    optimizer = torch.optim.AdamW(ref.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)  # decay on all
    states, tokens, lengths = map(torch.as_tensor, (h, data.tokens, data.lengths))
    for step in range(cfg.steps):
        idx = torch.as_tensor(batch_indices(step, 16, 600, 3))
        tok, length = tokens[idx], lengths[idx]
        logits = {"linear": lambda: ref.logits(states[idx]), "onion": lambda: ref.run(states[idx], tok),
                  "gru_autoregressive": lambda: ref.readout(ref.gru(ref._inputs(states[idx], tok),
                                                                     states[idx][None].contiguous())[0])}[kind]()
        mask = torch.arange(4)[None, :] < length[:, None]
        loss = cross_entropy(logits[mask], tok[mask])  # boolean mask: the per-step-synchronising form
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr_at(step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert np.isfinite(loss.item())
    for name, value in ours.state_dict().items():
        assert torch.equal(value, ref.state_dict()[name]), name


@pytest.mark.slow  # the default kernel compiles the GRU probes' loops: once per process, minutes on a cold cache
@pytest.mark.parametrize("kind", PROBE_KINDS)
def test_every_kind_resumes_bit_identically_with_the_default_kernel(tmp_path, kind):
    """kernel auto (the GRU probes compiled on a CPU), held-out exact match every 2 steps; killed after
    step 5, between the checkpoints at 3 and 6; then resumed, and resumed again once finished (a job
    killed after its last checkpoint, before its result): the weights bit for bit, and every field of
    the record but the bookkeeping (the final loss and the curve included), as an uninterrupted run's."""
    rng = np.random.default_rng(0)
    data, valid = (random_sequences(rng, n, DataConfig()) for n in (400, 50))
    h, h_valid = (rng.normal(size=(len(d), 8)).astype(np.float32) for d in (data, valid))
    cfg, ckpt = ProbeConfig(steps=8, batch_size=16, checkpoint_every=3, log_every=4), tmp_path / "ck.pt"

    def run(**kwargs):
        return train_probe(kind, h, data, 30, cfg, 0, "cpu", eval_every=2, valid=(h_valid, valid), kernel="auto",
                           **kwargs)

    whole, expected = run()
    _, killed = run(checkpoint_path=ckpt, stop_after=5)
    assert not killed["finished"] and [point["step"] for point in expected["curve"]] == [2, 4, 6, 8]
    for resumed_from in (3, 8):
        resumed, record = run(checkpoint_path=ckpt)
        assert record["resumed_from"] == resumed_from
        assert {k: v for k, v in record.items() if k not in BOOKKEEPING} == \
            {k: v for k, v in expected.items() if k not in BOOKKEEPING}
        for (name, a), b in zip(resumed.state_dict().items(), whole.state_dict().values()):
            assert torch.equal(a, b), name


def test_a_non_finite_loss_stops_the_probe_job_naming_step_and_cause(tmp_path, small_data_cfg, rng, capsys):
    path = _states_file(tmp_path, SlotModel(), small_data_cfg, rng, n_train=500, n_valid=50)
    out, breakdown, ckpt = tmp_path / "probe.json", tmp_path / "probe.parquet", tmp_path / "probe.pt"
    rc = main(["train-probe", "--kind", "mlp", "--probes", '{"steps": 4, "lr": Infinity, "checkpoint_every": 2}',
               "--states", str(path), "--device", "cpu", "--out", str(out), "--breakdown", str(breakdown),
               "--checkpoint", str(ckpt)])
    err = capsys.readouterr().err
    assert rc == 1 and "mlp probe step 1-2/4: the loss is nan; probes.lr may be too high" in err, err
    assert not out.exists() and not breakdown.exists() and not ckpt.exists()
