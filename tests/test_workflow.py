"""The real Snakemake workflow, end to end, on a tiny configuration in a temporary directory."""

import base64
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.utils import update_config

from onion.config_checks import grid_settings, kind_settings
from onion.keys import probe_key, settings_key, states_key
from onion.loop import BOOKKEEPING

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "grid": "tiny",
    "grids": {"tiny": {"models": [{"variants": ["autoregressive", "no_input"], "sizes": [8], "seeds": [0]},
                                  {"cells": ["lstm"], "variants": ["autoregressive"], "sizes": [8], "seeds": [0]}]}},
    "data": {"n_symbols": 30, "min_length": 2, "max_length": 9, "n_train": 3000, "n_valid": 100,
             "max_valid_fraction": 0.2, "seed": 0, "train_sampling": "distinct", "das_length": 9,
             "n_das_valid": 60, "das_train": "own", "n_das_train": 500},
    "train": {"steps": 150, "batch_size": 32, "lr": 0.001, "weight_decay": 0.1, "betas": [0.9, 0.999],
              "checkpoint_every": 50, "log_every": 50, "eval_every": 100},
    "interventions": {"steps": 30, "batch_size": 32, "lr": 0.001, "weight_decay": 0.1,
                      "betas": [0.9, 0.999], "checkpoint_every": 10, "log_every": 10},
    "extract": {"texts": ["ab1cadf2"], "n_trajectory_examples": 2, "n_train_states": 1000,
                "batch_size": 512},
    "probes": {"steps": 30, "batch_size": 32, "lr": 0.001, "weight_decay": 0.1, "betas": [0.9, 0.999],
               "lr_schedule": "constant", "checkpoint_every": 10, "log_every": 10},
    "device": "cpu",
    # torch.nn's layers: compiling every job's loops would take most of this suite's time; the compiled
    # kernel is checked against them per loop and kind in test_unrolled, test_interventions, test_probes
    "kernel": "nn",
}


def workflow_keys(config: dict) -> dict:
    """The settings keys the workflow gives `config` merged over config.yaml (as --configfile
    merges it): train, intervention and probe (every kind's: no by-kind overrides), states."""
    merged = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(merged, copy.deepcopy(config))
    extract = grid_settings(merged, "extract")
    return {"train": settings_key(grid_settings(merged, "train")),
            "intervention": settings_key(kind_settings(merged, "interventions", "onion")),
            "probe": probe_key(kind_settings(merged, "probes", "onion"), extract), "states": states_key(extract)}


KEYS = workflow_keys(TINY)
TRAIN = f"train={KEYS['train']}"  # the tiny grid's models' settings key
MODEL = f"cell=gru/variant=autoregressive/size=8/seed=0/{TRAIN}"
NO_INPUT = f"cell=gru/variant=no_input/size=8/seed=0/{TRAIN}"
INTERVENTION = KEYS["intervention"]
PROBE = KEYS["probe"]
STATES = f"final_states-{KEYS['states']}.parquet"


def workdir(tmp_path: Path, config: dict) -> Path:
    for name in ("Snakefile", "config.yaml", "workflow", "profiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # targets first: --configfile takes every argument after it
    return subprocess.run(["snakemake", *args, "--cores", "2", "--configfile", "tiny.yaml"],
                          cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    cwd = workdir(tmp_path_factory.mktemp("run"), TINY)
    result = snakemake(cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return cwd


def test_base_accuracy_table(finished_run):
    table = pd.read_csv(finished_run / "data/tables/table1_base_accuracy.csv")
    assert sorted(table["variant"]) == ["autoregressive", "no_input"]
    assert (table["size"] == 8).all() and (table["seeds"] == 1).all()  # GRUs only
    assert table["mean"].between(0, 1).all()
    markdown = (finished_run / "data/tables/table1_base_accuracy.md").read_text()
    assert "N=8" in markdown and "autoregressive" in markdown
    assert (finished_run / "data/tables/table1_base_accuracy.tex").read_text().startswith(r"\begin{table}")
    metrics = finished_run / f"data/models/{NO_INPUT}/metrics.json"
    assert '"exact_match"' in metrics.read_text()
    log = (finished_run / f"data/logs/train_model/{NO_INPUT}.log").read_text()
    assert "step 150/150" in log and "ETA" in log


def test_intervention_and_probe_tables_and_figures(finished_run):
    interventions = pd.read_csv(finished_run / "data/tables/table2_interventions.csv")
    assert {"linear_unigram", "linear_bigram", "onion", "onion_control"} <= set(interventions["kind"])
    probes = pd.read_csv(finished_run / "data/tables/table4_probes.csv")
    assert {"linear", "mlp", "onion", "gru_autoregressive", "gru_no_input"} <= set(probes["kind"])
    for table in (interventions, probes):
        assert (table["seeds"] == 1).all() and table["mean"].between(0, 1).all()
    for name in ("fig2_gates", "fig4_probes", "fig5_gates_all_channels",
                 "intervention_onion_scales", "intervention_das_budget"):
        assert (finished_run / f"data/figures/{name}.pdf").stat().st_size > 1000, name
    das_valid = pd.read_parquet(finished_run / "data/datasets/das_valid.parquet")
    assert len(das_valid) == 60 and (das_valid["length"] == 9).all()
    analyses = finished_run / f"data/analyses/{NO_INPUT}"
    assert json.loads((analyses / f"intervention-linear_bigram-{INTERVENTION}.json").read_text())["n"] == 60
    assert json.loads((analyses / f"intervention-onion-{INTERVENTION}.json").read_text())["n"] == 100  # valid set
    states = pd.read_parquet(finished_run / f"data/states/{MODEL}/{STATES}")
    assert {"variant", "cell", "size", "seed"} <= set(states.columns) and (states["size"] == 8).all()


def test_second_run_does_nothing(finished_run):
    result = snakemake(finished_run)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_the_report_opens_on_the_verdicts_and_shows_the_tables(finished_run):
    """`snakemake --report report.html`: the opening page states the summary's verdicts, the tables
    and the summary are HTML pages inside the report (not downloads only), the figures carry labels."""
    result = snakemake(finished_run, "--report", "report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    page = (finished_run / "report.html").read_text()
    opening = json.loads(re.search(r"var workflow_desc = (.*);\n", page).group(1))
    summary = (finished_run / "data/summary.md").read_text()
    contrast = re.search(r"^## (The contrast.*)\n\n\*\*(.+?)\.\*\*", summary, flags=re.M)
    assert f"<strong>{contrast.group(2)}</strong>: {contrast.group(1)}" in opening
    assert "Does this run reproduce" in opening and "literal\">tiny</tt>" in opening  # the grid
    embedded = {name: base64.b64decode(data).decode() for name, data in re.findall(
        r'data:text/html;[^,"]*filename=([^;,"]+)[^,"]*;base64,([A-Za-z0-9+/=]+)', page)}
    assert contrast.group(2) in embedded["summary.html"]
    row = next(line for line in (finished_run / "data/tables/table1_base_accuracy.md").read_text().splitlines()
               if line.startswith("| autoregressive"))
    cells = "".join(f"<td>{c.strip()}</td>" for c in row.strip().strip("|").split("|"))
    assert f"<tr>{cells}</tr>" in embedded["table1_base_accuracy.html"]
    assert {"table2_interventions.html", "table4_probes.html", "table_cells.html"} <= set(embedded)
    assert '"labels": {"figure": "Fig. 2"' in page


def test_a_grid_with_other_settings_adds_to_the_same_data_folder(tmp_path, finished_run):
    """Other training and analysis settings in the same data/: their models and analyses go to
    paths of their own; the finished run's artifacts are untouched, and the tables report both."""
    cwd = tmp_path / "two"
    shutil.copytree(finished_run, cwd, symlinks=True)
    other = {**TINY, "grids": {"tiny": {"models": [{"variants": ["no_input"], "sizes": [8], "seeds": [0, 1]}]}},
             "train": {**TINY["train"], "steps": 160}}
    (cwd / "tiny.yaml").write_text(yaml.safe_dump(other))
    before = {p: p.stat().st_mtime_ns for p in (cwd / "data").rglob("*")  # all but the table job's files
              if p.is_file() and "tables" not in p.parts and "figures" not in p.parts and p.suffix != ".md"
              and p.name != "table_base_accuracy.log"}
    result = snakemake(cwd, "data/tables/table1_base_accuracy.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p.exists())
    assert all(p.exists() for p in before)
    new = f"train={settings_key(other['train'])}"
    assert new != TRAIN and (cwd / f"data/models/cell=gru/variant=no_input/size=8/seed=1/{new}/model.pt").exists()
    table = pd.read_csv(cwd / "data/tables/table1_base_accuracy.csv")
    no_input = table[table["variant"] == "no_input"]
    # the 160-step pair pooled (2 seeds) and listed first; the 150-step model on its own line
    assert list(no_input["seeds"]) == [2, 1] and list(no_input["train"]) == [new[6:], TRAIN[6:]]
    assert "| variant | settings |" in (cwd / "data/tables/table1_base_accuracy.md").read_text()


def test_a_finished_run_of_an_older_layout_is_moved_by_the_command_not_retrained(tmp_path, finished_run):
    """Artifacts without settings keys and without the cell=gru/ segment (and no Snakemake metadata
    for the new paths): a dry run stops, moves nothing and names the command; after
    `migrate-layout` nothing reruns."""
    cwd = tmp_path / "old"
    shutil.copytree(finished_run, cwd, symlinks=True)
    shutil.rmtree(cwd / ".snakemake")
    for key_dir in list((cwd / "data").rglob("train=*")):  # back to .../seed=S/<name> without keys
        if key_dir.is_dir():
            for item in key_dir.iterdir():
                item.rename(key_dir.parent / re.sub(r"-[0-9a-f]{8}(\.\w+)$", r"\1", item.name))
            key_dir.rmdir()
    for cell_dir in sorted((cwd / "data").rglob("cell=gru"), key=lambda p: -len(p.parts)):
        for item in cell_dir.iterdir():
            item.rename(cell_dir.parent / item.name)  # back to .../variant=...
        cell_dir.rmdir()
    old_model = cwd / "data/models/variant=autoregressive/size=8/seed=0/model.pt"
    assert old_model.exists()
    result = snakemake(cwd, "-n")
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "python -m onion migrate-layout data" in out, out[-3000:]
    assert old_model.exists() and not (cwd / f"data/models/{MODEL}").exists()  # a dry run moves nothing
    moved = subprocess.run([sys.executable, "-m", "onion", "migrate-layout", "data"], cwd=cwd,
                           capture_output=True, text=True, timeout=120)
    assert moved.returncode == 0 and "to the current layout" in moved.stderr, moved.stderr
    result = snakemake(cwd, "-n")
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "Nothing to be done" in out, out[-3000:]
    assert (cwd / f"data/models/{MODEL}/model.pt").exists()
    assert not list((cwd / "data/models").glob("variant=*"))


def test_cells_table_figure_and_verdicts(finished_run):
    """A grid with a cell besides the GRU: the cells table, the per-cell figure and the verdicts;
    the paper's tables keep GRU rows only."""
    table = pd.read_csv(finished_run / "data/tables/table_cells.csv")
    assert sorted(table["cell"].unique()) == ["gru", "lstm"]
    assert set(table["method"]) >= {"base", "intervention onion", "probe linear", "probe onion"}
    lstm = pd.read_parquet(finished_run / f"data/states/cell=lstm/variant=autoregressive/size=8/seed=0/{TRAIN}/{STATES}")
    assert len(lstm["h"].iloc[0]) == 16  # [h; c]
    traj = pd.read_parquet(finished_run / f"data/states/cell=lstm/variant=autoregressive/size=8/seed=0/{TRAIN}/trajectories.parquet")
    assert {"c", "i", "f", "g", "o"} <= set(traj.columns)
    assert (finished_run / "data/figures/intervention_onion_scales_cells.pdf").stat().st_size > 1000
    summary = (finished_run / "data/summary.md").read_text()
    assert "the onion signature per recurrent cell" in summary and "### lstm, autoregressive N = 8" in summary
    base = pd.read_csv(finished_run / "data/tables/table1_base_accuracy.csv")  # the paper's tables: GRUs only
    assert sorted(base["variant"]) == ["autoregressive", "no_input"] and (base["seeds"] == 1).all()


def test_a_run_in_another_directory_reads_the_defaults_beside_the_snakefile(tmp_path):
    """`snakemake --directory runs/x --configfile my.yaml` from the repository: no config.yaml in
    runs/x, the defaults are read beside the Snakefile and everything is written under runs/x."""
    repo = workdir(tmp_path, TINY)
    result = subprocess.run(["snakemake", "--directory", "runs/x", "--configfile", "tiny.yaml", "--cores", "1",
                             "data/datasets/valid.parquet"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(pd.read_parquet(repo / "runs/x/data/datasets/valid.parquet")) == TINY["data"]["n_valid"]
    assert not (repo / "runs/x/config.yaml").exists() and not (repo / "data").exists()


def test_what_the_figures_show_comes_from_config(tmp_path):
    cwd = workdir(tmp_path, {**TINY, "figures": {"size": 8, "channels": 5}})
    result = snakemake(cwd, "-n", "-p", "data/figures/fig2_gates.pdf", "data/figures/fig4_probes.pdf")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "--channels 5 " in out and "--size 8 " in out


def test_rebuilding_a_table_never_retrains(finished_run):
    (finished_run / "data/tables/table1_base_accuracy.md").unlink()
    result = snakemake(finished_run, "-n", "data/tables/table1_base_accuracy.md")
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "table_base_accuracy" in out
    assert "train_model" not in out and "make_dataset" not in out


@pytest.mark.parametrize("override, key", [
    ({"grids": {"tiny": {"models": [{"variants": ["autoregressive"], "sizes": [-8], "seeds": [0]}]}}},
     "grids.tiny.models.0.sizes.0"),
    ({"grids": {"tiny": {"models": [{"variants": ["bidirectional"], "sizes": [8], "seeds": [0]}]}}},
     "grids.tiny.models.0.variants.0"),
    ({"train": {**TINY["train"], "stepz": 10}}, "train"),
    ({"train": {**TINY["train"], "steps": "many"}}, "train.steps"),
    ({"grid": "huge"}, "grid"),
])
def test_bad_config_stops_before_any_job(tmp_path, override, key):
    cwd = workdir(tmp_path, {**TINY, **override})
    result = snakemake(cwd)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"config key '{key}'" in out, out[-2000:]
    assert not (cwd / "data").exists()


# --- killed, then rerun with other inputs: never resume a stale checkpoint ---------------------


def _stale_training_checkpoint(cwd: Path, config: dict) -> None:
    """What a train_model job killed half-way leaves behind, for the data of `config`."""
    from onion.config import DataConfig, TrainConfig, from_dict
    from onion.data import read_sequences
    from onion.model import RepeatRNN
    from onion.training import train_model
    import torch
    train = read_sequences(cwd / "data/datasets/train.parquet", 9)
    valid = read_sequences(cwd / "data/datasets/valid.parquet", 9)
    torch.manual_seed(0)
    train_model(RepeatRNN(from_dict(DataConfig, config["data"]).n_symbols, 8), train, valid,
                from_dict(TrainConfig, config["train"]), 0, torch.device("cpu"),
                cwd / f"data/checkpoints/{MODEL}/train.pt", stop_after=100)


def test_training_killed_with_other_data_starts_over(tmp_path, finished_run):
    """Killed with data.seed 1, rerun with data.seed 0: the model and its metrics are the clean
    run's, bit for bit."""
    seed1 = {**TINY, "data": {**TINY["data"], "seed": 1}}
    cwd = workdir(tmp_path, seed1)
    assert snakemake(cwd, "data/datasets/train.parquet").returncode == 0
    _stale_training_checkpoint(cwd, seed1)
    (cwd / "tiny.yaml").write_text(yaml.safe_dump(TINY))  # back to data.seed 0
    result = snakemake(cwd, f"data/models/{MODEL}/metrics.json")
    assert result.returncode == 0, result.stderr[-2000:]
    log = (cwd / f"data/logs/train_model/{MODEL}.log").read_text()
    assert "starting over" in log and "training data differ" in log and "resuming" not in log
    # bit for bit the clean run's: every weight, and every field of metrics.json but the bookkeeping
    import torch
    ours, clean = (torch.load(run / f"data/models/{MODEL}/model.pt")["state_dict"] for run in (cwd, finished_run))
    assert ours.keys() == clean.keys() and all(torch.equal(ours[k], clean[k]) for k in clean)
    ours, clean = (json.loads((run / f"data/models/{MODEL}/metrics.json").read_text()) for run in (cwd, finished_run))
    assert ours["training"]["resumed_from"] == 0
    for record in (ours, clean):
        record["training"] = {k: v for k, v in record["training"].items() if k not in BOOKKEEPING}
    assert ours == clean


def test_probe_killed_then_model_retrained_starts_over(tmp_path):
    """A probe killed, then its model retrained on other data (same settings key): the probe
    starts over."""
    from onion.extract import read_states
    from onion.probes import ProbeConfig, train_probe
    from onion.config import from_dict
    cwd = workdir(tmp_path, TINY)
    states = f"data/states/{MODEL}/{STATES}"
    assert snakemake(cwd, states).returncode == 0
    h, data, _ = read_states(cwd / states, "train", 9)
    train_probe("mlp", h, data, 30, from_dict(ProbeConfig, TINY["probes"]), 0, "cpu",
                cwd / f"data/checkpoints/{MODEL}/probe-mlp-{PROBE}.pt", stop_after=10)
    retrained = {**TINY, "data": {**TINY["data"], "seed": 1}}  # the same settings key, other data
    (cwd / "tiny.yaml").write_text(yaml.safe_dump(retrained))
    result = snakemake(cwd, f"data/analyses/{MODEL}/probe-mlp-{PROBE}.json")
    assert result.returncode == 0, result.stderr[-2000:]
    log = (cwd / f"data/logs/train_probe/{MODEL}/mlp-{PROBE}.log").read_text()
    assert "starting over" in log and "states differ" in log and "resuming" not in log


def test_grid_overrides_of_top_level_settings_are_reported(tmp_path):
    config = {**TINY, "grids": {"tiny": {**TINY["grids"]["tiny"], "interventions": {"steps": 7}}}}
    result = snakemake(workdir(tmp_path, config), "-n")
    out = result.stdout + result.stderr
    assert result.returncode == 0
    assert "grid 'tiny' overrides the top-level settings: interventions.steps = 7" in out
    assert "top level: 30" in out


def test_every_gpu_job_takes_one_gpu_slot(tmp_path):
    """With device=cuda each training, extraction, intervention and probe job asks one `gpu_slots`
    (so --resources gpu_slots=k runs k at once on a GPU box); on the CPU none does."""
    cwd = workdir(tmp_path, TINY)
    for device, slots in (("cuda", 1), ("cpu", 0)):
        result = subprocess.run(["snakemake", "-n", "--cores", "2", "--configfile", "tiny.yaml",
                                 "--config", f"device={device}"], cwd=cwd, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", result.stdout, flags=re.M)
        heavy = [(rule, res) for rule, res in jobs if rule in ("train_model", "extract_final_states",
                                                              "extract_trajectories", "train_intervention",
                                                              "train_probe")]
        counts = {rule: sum(r == rule for r, _ in heavy) for rule, _ in heavy}
        assert counts["train_model"] == 3 and counts["train_intervention"] == 12
        assert counts["train_probe"] == 15 and counts["extract_final_states"] == 3
        assert counts["extract_trajectories"] >= 1
        for rule, res in heavy:
            assert ("gpu_slots=1" in res) if slots else ("gpu_slots=1" not in res), (rule, res)
