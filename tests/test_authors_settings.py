"""The authors' settings are the defaults (PAPER.md §2-5); each test fails if its default is reverted
to the one this project used before, and the summary page lists every departure."""

import numpy as np
import torch

from onion.config import DataConfig
from onion.data import make_das_train, make_das_valid, make_datasets, sequence_keys, write_sequences
from onion.interventions import InterventionConfig, make_counterfactuals
from onion.probes import ProbeConfig, make_probe, make_probe_optimizer
from onion.report.summary import differences_from_authors


def test_every_probe_parameter_is_decayed_by_default():
    for kind in ("linear", "mlp", "onion", "gru_autoregressive", "gru_no_input"):
        probe = make_probe(kind, 16, 30, 9)
        optimizer = make_probe_optimizer(probe, ProbeConfig())
        decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
        assert decayed == {id(p) for p in probe.parameters()}, kind
    onion = make_probe("onion", 16, 30, 9)
    matrices = make_probe_optimizer(onion, ProbeConfig(weight_decay_on="matrices"))
    undecayed = [p for g in matrices.param_groups if g["weight_decay"] == 0 for p in g["params"]]
    assert any(p is onion.gamma for p in undecayed)  # the option keeps the former behaviour


def test_onion_probe_layer_norm_has_pytorchs_default_eps():
    assert make_probe("onion", 16, 30, 9).classifier[0].eps == 1e-5


def test_a_counterfactual_replacement_can_equal_the_original():
    target = torch.randint(0, 30, (20_000, 9), generator=torch.Generator().manual_seed(0))
    lengths = torch.full((20_000,), 9)
    assert InterventionConfig().replacement == "any"
    for kind in ("onion", "linear_unigram"):
        cf = make_counterfactuals(kind, target, lengths, torch.Generator().manual_seed(1), 30)
        same = (cf.base == target)[cf.changed].float().mean().item()
        assert abs(same - 1 / 30) < 0.01, (kind, same)  # uniform over all 30 symbols
        cf = make_counterfactuals(kind, target, lengths, torch.Generator().manual_seed(1), 30, "different")
        assert not (cf.base == target)[cf.changed].any(), kind


def test_linear_das_trains_on_its_own_distinct_set():
    cfg = DataConfig(n_train=5_000, n_valid=200, n_das_valid=300, n_das_train=4_000, seed=4)
    assert DataConfig().das_train == "own" and DataConfig().n_das_train == 1_000_000
    train, valid = make_datasets(cfg)
    das_valid = make_das_valid(cfg, train, valid)
    own = make_das_train(cfg, train, das_valid)
    keys = sequence_keys(own.tokens, own.lengths, 30)
    assert len(np.unique(keys)) == len(own) == 4_000 and (own.lengths == 9).all()
    assert not np.isin(keys, sequence_keys(das_valid.tokens, das_valid.lengths, 30)).any()
    rows = make_das_train(DataConfig(**{**cfg.__dict__, "das_train": "model_train"}), train, das_valid)
    assert len(rows) == (train.lengths == 9).sum()  # the former choice, kept as an option


def test_the_linear_das_job_reads_its_own_training_set(tmp_path):
    """The model's training set has no length-9 sequence here: linear DAS can only have trained on
    the --das-train-data file (the former behaviour, length-9 rows of --train-data, would stop)."""
    from onion.cli import main
    from onion.data import random_sequences
    from onion.model import RepeatRNN, save_model
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    save_model(RepeatRNN(30, 16), tmp_path / "model.pt")
    write_sequences(tmp_path / "train.parquet", random_sequences(rng, 500, DataConfig(max_length=9), length=5))
    for name in ("valid", "das_valid", "das_train"):
        write_sequences(tmp_path / f"{name}.parquet", random_sequences(rng, 100, DataConfig(), length=9))
    args = ["train-intervention", "--kind", "linear_bigram", "--model", str(tmp_path / "model.pt"),
            "--interventions", '{"steps": 2, "batch_size": 8}', "--size", "16", "--device", "cpu",
            "--kernel", "nn",  # which file it reads is under test, not the kernel
            "--train-data", str(tmp_path / "train.parquet"), "--valid-data", str(tmp_path / "valid.parquet"),
            "--das-valid-data", str(tmp_path / "das_valid.parquet"),
            "--das-train-data", str(tmp_path / "das_train.parquet"),
            "--out", str(tmp_path / "r.json"), "--parameters", str(tmp_path / "p.parquet")]
    assert main(args) == 0 and (tmp_path / "r.json").exists()


def test_the_summary_lists_every_departure_from_the_authors():
    authors = {"data": {"train_sampling": "distinct", "das_train": "own"},
               "interventions": {"steps": 60_000, "lr": 0.001, "replacement": "any"},
               "probes": {"steps": 60_000, "lr": 0.001, "lr_schedule": "constant", "weight_decay_on": "all"}}
    assert differences_from_authors(authors, seeds=5) == []
    ours = {"data": {"train_sampling": "iid", "das_train": "model_train"},
            "interventions": {"steps": 6000, "lr": 0.003, "replacement": "different"},
            "probes": {"steps": 6000, "lr": 0.03, "lr_schedule": "cosine", "weight_decay_on": "matrices"},
            "extract": {"n_train_states": 100_000}}
    lines = differences_from_authors(ours, seeds=2)
    for expected in ("data.train_sampling = 'iid'", "data.das_train = 'model_train'",
                     "interventions.steps = 6000 (the authors: 60000)", "interventions.replacement",
                     "probes.lr_schedule = 'cosine'", "probes.weight_decay_on = 'matrices'",
                     "extract.n_train_states = 100000 (the authors: 1000000)",
                     "2 seeds per entry (the authors: 5)"):
        assert any(line.startswith(expected) for line in lines), expected
    assert len(lines) == 11
    by_kind = differences_from_authors({**authors, "probes_by_kind": {"gru_no_input": {"steps": 20000, "lr": 0.001}}}, 5)
    assert by_kind == ["probes[gru_no_input].steps = 20000, for the gru_no_input kind only (the authors: 60000)"]
