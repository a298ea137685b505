"""Killed anywhere, the same results: the real workflow on a tiny grid, once uninterrupted and once
killed with SIGKILL to its whole process group inside training, extraction, an intervention, a probe
and a table, each kill followed by the documented restart (`snakemake --unlock`, then `snakemake`).
Every file the two runs leave under data/ (logs, benchmarks and checkpoints aside) is the same bit
for bit; in result JSON, the keys onion.loop.BOOKKEEPING names (how a run went: resumed_from,
steps_this_run, timings) are the only ones allowed to differ.

`kernel: nn`: the compiled kernel's compilation (minutes per job on a cold cache) would not fit the
two minutes this test may take; a resume restores the same state whatever the kernel, and resumes
with the default kernel are compared bit for bit per kind in test_interventions.py and test_probes.py.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_workflow import TINY, workdir, workflow_keys

from onion.loop import BOOKKEEPING

CONFIG = {
    **TINY,
    "grids": {"tiny": {"models": [{"variants": ["autoregressive"], "sizes": [8], "seeds": [0]}]}},
    "data": {**TINY["data"], "n_train": 2000, "n_das_train": 200},
    "train": {**TINY["train"], "steps": 300, "checkpoint_every": 50, "log_every": 50, "eval_every": 100},
    "interventions": {**TINY["interventions"], "steps": 80, "checkpoint_every": 20, "log_every": 20},
    "probes": {**TINY["probes"], "steps": 80, "checkpoint_every": 20, "log_every": 20},
    "extract": {**TINY["extract"], "n_train_states": 500},
    "kernel": "nn",
    "threads_per_job": 1,
}
KEYS = workflow_keys(CONFIG)
MODEL = f"cell=gru/variant=autoregressive/size=8/seed=0/train={KEYS['train']}"
INTERVENTION, PROBE = f"onion-{KEYS['intervention']}", f"onion-{KEYS['probe']}"
TARGETS = [f"data/analyses/{MODEL}/intervention-{INTERVENTION}.json", f"data/analyses/{MODEL}/probe-{PROBE}.json",
           "data/tables/table1_base_accuracy.csv"]
# where to kill: a file that appears while the job runs (a checkpoint; the log, which the job's shell
# opens first, where a job has none), and the result that must not exist yet
KILL_POINTS = {
    "training": (f"data/checkpoints/{MODEL}/train.pt", f"data/models/{MODEL}/metrics.json"),
    "extraction": (f"data/logs/extract_final_states/{MODEL}/{KEYS['states']}.log",
                   f"data/states/{MODEL}/final_states-{KEYS['states']}.parquet"),
    "intervention": (f"data/checkpoints/{MODEL}/intervention-{INTERVENTION}.pt", TARGETS[0]),
    "probe": (f"data/checkpoints/{MODEL}/probe-{PROBE}.pt", TARGETS[1]),
    "table": ("data/logs/table_base_accuracy.log", TARGETS[2]),
}
SKIPPED = {"logs", "benchmarks", "checkpoints"}  # bookkeeping, not results


def snakemake(cwd: Path, *args: str) -> subprocess.Popen:
    """Snakemake on the targets in a process group of its own (its jobs inherit it)."""
    with open(cwd / "snakemake.out", "a") as out:
        return subprocess.Popen(["snakemake", *TARGETS, *args, "--cores", "1", "--configfile", "tiny.yaml"],
                                cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})


def run_until_killed(cwd: Path, pending: dict) -> str | None:
    """Run Snakemake until one of the `pending` kill points is reached, then SIGKILL its process
    group; returns that point's name, or None if the run ended first."""
    proc = snakemake(cwd)
    while proc.poll() is None:
        for name, (appears, result) in pending.items():
            if (cwd / appears).exists():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                assert not (cwd / result).exists(), f"{name}: the job ended before the kill"
                return name
        time.sleep(0.01)
    assert proc.returncode == 0, (cwd / "snakemake.out").read_text()[-3000:]
    return None


def without_bookkeeping(value):
    if isinstance(value, dict):
        return {k: without_bookkeeping(v) for k, v in value.items() if k not in BOOKKEEPING}
    return [without_bookkeeping(v) for v in value] if isinstance(value, list) else value


def result_files(data: Path) -> dict:
    return {p.relative_to(data): p for p in sorted(data.rglob("*"))
            if p.is_file() and not SKIPPED & set(p.relative_to(data).parts)}


@pytest.mark.slow  # 12 Snakemake starts, 17 jobs: 110 s on 2 cores at load 2, 4-5 minutes at load 5-8
def test_a_run_killed_anywhere_and_restarted_ends_with_the_uninterrupted_runs_results(tmp_path):
    began = time.perf_counter()
    straight, killed = (tmp_path / "straight", tmp_path / "killed")
    for cwd in (straight, killed):
        cwd.mkdir()
        workdir(cwd, CONFIG)
    uninterrupted = snakemake(straight)  # meanwhile, on a core of its own where there is one
    try:
        pending, kills = dict(KILL_POINTS), []
        while pending:
            kills.append(run_until_killed(killed, pending))
            assert kills[-1], f"the run ended before the kill points {sorted(pending)} were reached"
            del pending[kills[-1]]
            unlock = snakemake(killed, "--unlock")  # the documented restart: unlock, then run again
            assert unlock.wait() == 0, (killed / "snakemake.out").read_text()[-3000:]
        assert run_until_killed(killed, {}) is None
        assert uninterrupted.wait() == 0, (straight / "snakemake.out").read_text()[-3000:]
    finally:
        if uninterrupted.poll() is None:
            os.killpg(uninterrupted.pid, signal.SIGKILL)
    for log in (f"train_model/{MODEL}.log", f"train_intervention/{MODEL}/{INTERVENTION}.log",
                f"train_probe/{MODEL}/{PROBE}.log"):
        assert "resuming from checkpoint" in (killed / "data/logs" / log).read_text(), log

    ours, theirs = result_files(killed / "data"), result_files(straight / "data")
    assert sorted(ours) == sorted(theirs) and not list((killed / "data").rglob("*.tmp"))
    for rel, path in ours.items():
        if path.suffix == ".json":
            a, b = (json.loads(p.read_text()) for p in (path, theirs[rel]))
            assert without_bookkeeping(a) == without_bookkeeping(b), rel
        else:
            assert path.read_bytes() == theirs[rel].read_bytes(), rel
    print(f"kills: {kills}; {len(ours)} files compared; {time.perf_counter() - began:.0f} s")


def test_a_failed_job_says_how_to_restart(tmp_path):
    """Snakemake's closing hint (workflow/rules/common.smk, onerror): run again; after a kill,
    `snakemake --unlock` first; how a long grid outlives its terminal."""
    cwd = workdir(tmp_path, CONFIG)
    (cwd / "data/datasets").mkdir(parents=True)
    for name in ("train", "valid", "das_valid", "das_train"):  # corrupt: training fails at once
        (cwd / f"data/datasets/{name}.parquet").write_text("not Parquet")
    result = subprocess.run(["snakemake", f"data/models/{MODEL}/metrics.json", "--cores", "1", "--configfile",
                             "tiny.yaml"], cwd=cwd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Error in rule train_model" in out, out[-3000:]
    assert "run `snakemake --unlock` first, then snakemake" in out and "nohup snakemake" in out, out[-3000:]
