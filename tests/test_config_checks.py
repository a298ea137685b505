"""Every config that cannot work is named before the first job (onion.config_checks)."""

import copy
from pathlib import Path

import pytest
import yaml

from onion.config_checks import config_problems, grid_overrides

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
SCHEMA = yaml.safe_load((REPO / "onion/config.schema.yaml").read_text())


def _with(changes: dict) -> dict:
    """config.yaml with dotted keys replaced."""
    config = copy.deepcopy(CONFIG)
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = config
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = value
    return config


def test_the_shipped_config_is_valid():
    assert config_problems(CONFIG, SCHEMA, cuda_available=lambda: False) == []
    for grid in CONFIG["grids"]:
        assert config_problems(_with({"grid": grid}), SCHEMA) == [], grid


@pytest.mark.parametrize("changes, key, words", [
    ({"data.max_length": 8}, "data.das_length", "outside the sequence lengths"),
    ({"data.das_length": 10}, "data.das_length", "outside the sequence lengths"),
    ({"data.das_length": 1}, "data.das_length", "outside the sequence lengths"),
    ({"data.n_symbols": 10}, "extract.texts.0", "outside the 10-symbol vocabulary"),
    ({"extract.texts": ["ab1cadf2a0"]}, "extract.texts.0", "has length 10"),
    ({"data.n_valid": 10**12}, "data.n_valid", "greater than the maximum"),  # not a 65 GiB array
    ({"data.max_valid_fraction": 0.01, "data.max_length": 3, "data.das_length": 3,
      "extract.texts": ["ab1"]}, "data.n_valid", "exceeds the 279 sequences"),
    ({"data.max_length": 3, "data.das_length": 3}, "data.n_train", "distinct sequences do not exist"),
    ({"train.steps": 300.0}, "train.steps", "not of type 'integer'"),
    ({"grids.default.models.0.sizes": [16.0]}, "grids.default.models.0.sizes.0", "not of type 'integer'"),
    ({"train.lr": float("inf")}, "train.lr", "not a finite number"),
    ({"train.lr": float("nan")}, "train.lr", "not a finite number"),
    ({"grids.default.probes.lr": float("nan")}, "grids.default.probes.lr", "not a finite number"),
    ({"grid": "huge"}, "grid", "not one of the grids"),
    ({"data.min_length": 5, "data.max_length": 4}, "data.min_length", "exceeds max_length"),
    ({"data.n_das_train": 20_000_000_000_000}, "data.n_das_train", "greater than the maximum"),
    ({"data.n_das_train": 9_000_000, "data.das_length": 4, "extract.texts": ["ab1c"]}, "data.n_das_train",
     "do not exist outside the linear-DAS validation set"),
    ({"kernel": "fused"}, "kernel", "is not one of"),
    ({"grids.default.probes_by_kind": {"gru_decoder": {"steps": 10}}}, "grids.default.probes_by_kind",
     "'gru_decoder' is not one of"),
    ({"grids.default.probes_by_kind": {"mlp": {"stepz": 10}}}, "grids.default.probes_by_kind.mlp",
     "Additional properties"),
])
def test_each_rule_names_its_key(changes, key, words):
    problems = config_problems(_with(changes), SCHEMA)
    assert any(f"'{key}'" in p and words in p for p in problems), problems


def test_per_kind_settings_override_the_grids_for_that_kind_only():
    from onion.config_checks import kind_settings
    config = _with({"grids.default.probes_by_kind": {"gru_no_input": {"steps": 20000, "lr_schedule": "constant"}}})
    assert config_problems(config, SCHEMA) == []
    assert kind_settings(config, "probes", "gru_no_input")["steps"] == 20000
    assert kind_settings(config, "probes", "gru_no_input")["lr"] == 0.03  # the grid's, unchanged
    assert kind_settings(config, "probes", "mlp")["steps"] == 6000
    assert kind_settings(config, "interventions", "onion") == {**CONFIG["interventions"],
                                                               **CONFIG["grids"]["default"]["interventions"]}
    assert "probes[gru_no_input].steps = 20000 (grid 'default', gru_no_input only)" in grid_overrides(config)
def test_cuda_without_cuda_is_rejected_only_where_it_is_checked():
    config = _with({"device": "cuda"})
    problems = config_problems(config, SCHEMA, cuda_available=lambda: False)
    assert any("'device'" in p and "no CUDA" in p for p in problems), problems
    assert config_problems(config, SCHEMA, cuda_available=lambda: True) == []
    assert config_problems(config, SCHEMA, cuda_available=None) == []  # e.g. a cluster's login node


def test_grid_overrides_are_reported():
    lines = grid_overrides(_with({"interventions.steps": 12345}))
    assert any("interventions.steps = 6000" in line and "top level: 12345" in line for line in lines)
    assert grid_overrides(_with({"grid": "paper"})) == [
        "extract.n_train_states = 200000 (grid 'paper'; top level: 100000)"]


def test_yaml_errors_name_file_and_line(tmp_path):
    from onion.config_checks import load_yaml
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  seed: 1\n  n_train: [1\n")
    with pytest.raises(ValueError, match=r"bad.yaml, line \d+, column \d+: not valid YAML"):
        load_yaml(bad)


def test_check_config_command_merges_files_like_snakemake(tmp_path):
    from onion.cli import main
    override = tmp_path / "mine.yaml"
    override.write_text("train:\n  lr: .inf\n")
    assert main(["check-config", str(REPO / "config.yaml")]) == 0  # the packaged schema
    assert main(["check-config", str(REPO / "config.yaml"), str(override), "--schema",
                 str(REPO / "onion/config.schema.yaml")]) == 1
