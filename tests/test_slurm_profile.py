"""The SLURM profile without a cluster: what it sets, and the jobs and groups a dry run plans."""

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from onion.keys import settings_key
from test_workflow import TINY, workdir

REPO = Path(__file__).resolve().parents[1]
PROFILE = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
HAS_PLUGIN = importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None
LIGHT_RULES = ["table_base_accuracy", "table_interventions", "table_probes", "figure_gates",
               "figure_probes", "figure_gates_all_channels", "figure_onion_scales",
               "figure_das_budget", "write_summary"]


def localrules() -> set[str]:
    """Rule names in the workflow's `localrules:` directives."""
    names = set()
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]:
        for block in re.findall(r"^localrules:\n((?:[ \t]+\w+,?\n)+)", path.read_text(), flags=re.M):
            names.update(re.findall(r"\w+", block))
    return names


def test_light_rules_run_on_the_submitting_machine():
    assert set(LIGHT_RULES) <= localrules()
    assert {"all", "tables", "figures"} <= localrules()
    assert not {"make_dataset", "train_model", "train_probe", "train_intervention"} & localrules()


def test_profile_leaves_config_account_and_partition_to_the_user():
    assert "config" not in PROFILE and "configfile" not in PROFILE  # --config/--configfile work
    assert "default-resources" not in PROFILE  # a command-line one would drop them anyway
    assert "your_account" not in str(PROFILE) and "your_partition" not in str(PROFILE)
    assert PROFILE["executor"] == "slurm"


def test_profile_sees_cancellations_and_retries():
    # sacct's "CANCELLED by <uid>" is not a failure state for the plugin (2.8.0); squeue's CANCELLED is
    assert PROFILE["slurm-status-command"] == "squeue"
    assert PROFILE["retries"] >= 1 and PROFILE["slurm-requeue"] is True


def profile_args(*keys):
    """The profile's list-valued options as command-line arguments for any executor."""
    return [arg for key in keys for arg in (f"--{key}", *PROFILE[key])]


def dry_run(cwd: Path, *args: str) -> str:
    # targets first: --configfile takes every argument after it
    result = subprocess.run(["snakemake", "-n", *args, "--configfile", "tiny.yaml"],
                            cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def group_members(out: str) -> dict[str, list[str]]:
    """Group job name -> the rules of its members, from a dry run's output."""
    groups = {}
    for block in re.split(r"\n(?=\[[^\]]*\] Group job )", out)[1:]:
        name = re.match(r"\[[^\]]*\] Group job (\S+)", block).group(1)
        groups[name] = re.findall(r"^\s+rule (\w+):", block, flags=re.M)
    return groups


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return workdir(tmp_path_factory.mktemp("slurm"), TINY)


def check_one_group_per_model(out: str) -> None:
    groups = group_members(out)
    key = settings_key(TINY["train"])
    assert sorted(groups) == [f"analyses_gru_autoregressive_8_0_{key}", f"analyses_gru_no_input_8_0_{key}",
                              f"analyses_lstm_autoregressive_8_0_{key}"]
    for name, rules in groups.items():
        assert rules.count("train_intervention") == 4 and rules.count("train_probe") == 5, name
        assert "extract_final_states" in rules and "train_model" not in rules, name
    # the figures need the trajectories of one model only: it is in that model's group
    assert "extract_trajectories" in groups[f"analyses_gru_autoregressive_8_0_{key}"]


def test_profile_groups_each_models_analyses_into_one_job(tiny_dir):
    """Group formation with the profile's --groups and --group-components (any executor's dry run)."""
    check_one_group_per_model(dry_run(tiny_dir, *profile_args("groups", "group-components")))


def test_groups_turn_off(tiny_dir):
    out = dry_run(tiny_dir, *profile_args("groups", "group-components"), "--groups", "none=none")
    assert not group_members(out)


@pytest.mark.skipif(not HAS_PLUGIN, reason="snakemake-executor-plugin-slurm not installed")
def test_slurm_dry_run_keeps_resources_and_runs_light_rules_here(tiny_dir):
    out = dry_run(tiny_dir, "--profile", "profiles/slurm",
                  "--default-resources", "slurm_partition=somewhere",
                  "--set-resources", "train_model:slurm_partition=gpu")
    check_one_group_per_model(out)
    train = out[out.index("rule train_model:"):]
    train = train[:train.index("\n\n")]
    # a command-line --default-resources does not drop the rule's own memory and time limit
    assert re.search(r"mem_mb=6000\b", train) and re.search(r"runtime=\d+", train), train
    assert "slurm_partition=gpu" in train, train
