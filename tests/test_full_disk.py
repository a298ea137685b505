"""A full disk: a job that cannot write stops with a message that names the file and the cause,
leaves no result or checkpoint that looks complete, and its rerun, once there is space, ends with
the numbers of a run that never failed. The full disk is a file-size limit (RLIMIT_FSIZE) on the
job's process: a write past it fails as on a full disk, with EFBIG ("File too large") for ENOSPC."""

import dataclasses
import json
import os
import resource
import signal
import subprocess
import sys

import torch

from onion.config import DataConfig, TrainConfig
from onion.data import make_datasets, read_sequences, write_sequences
from onion.loop import BOOKKEEPING
from onion.model import RepeatRNN
from onion.training import train_model

DATA = DataConfig(n_symbols=6, min_length=2, max_length=4, n_train=3000, n_valid=60, seed=0,
                  train_sampling="iid", das_length=4)
TRAIN = {"steps": 40, "batch_size": 16, "checkpoint_every": 10, "log_every": 10, "eval_every": 0}


def job(*args, limit: int | None = None) -> subprocess.CompletedProcess:
    """`python -m onion ARGS` in a process that cannot write files larger than `limit` bytes."""
    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "onion", *map(str, args)], capture_output=True, text=True,
                          timeout=300, preexec_fn=limited if limit else None,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def train_args(folder, data_dir):
    return ("train", "--data", json.dumps(dataclasses.asdict(DATA)), "--train", json.dumps(TRAIN), "--size", 8,
            "--train-data", data_dir / "train.parquet", "--valid-data", data_dir / "valid.parquet",
            "--device", "cpu", "--kernel", "nn", "--threads", 1, "--checkpoint", folder / "train.pt",
            "--model", folder / "model.pt", "--metrics", folder / "metrics.json")


def test_a_full_disk_stops_the_job_naming_the_file_and_the_rerun_ends_as_an_uninterrupted_run(tmp_path):
    for name, data in zip(("train", "valid"), make_datasets(DATA)):
        write_sequences(tmp_path / f"{name}.parquet", data)
    train, valid = (read_sequences(tmp_path / f"{name}.parquet", DATA.max_length) for name in ("train", "valid"))
    straight, full = tmp_path / "straight", tmp_path / "full"
    assert job(*train_args(straight, tmp_path)).returncode == 0

    # training killed after its checkpoint at step 20 (made here, as the job makes it) ...
    torch.manual_seed(0)
    train_model(RepeatRNN(6, 8), train, valid, TrainConfig(**TRAIN), 0, torch.device("cpu"), full / "train.pt",
                stop_after=25)
    checkpoint = (full / "train.pt").read_bytes()
    # ... restarted on a full disk: the checkpoint at step 30 cannot be written
    failed = job(*train_args(full, tmp_path), limit=len(checkpoint) - 1)
    assert failed.returncode == 1, failed.stderr
    assert f"error: [Errno 27] cannot write {full / 'train.pt'} (File too large)" in failed.stderr, failed.stderr
    assert sorted(p.name for p in full.iterdir()) == ["train.pt"]  # no model, metrics or .tmp
    assert (full / "train.pt").read_bytes() == checkpoint  # the last complete checkpoint, as it was

    # space freed: the rerun resumes from step 20 and ends as the uninterrupted run
    rerun = job(*train_args(full, tmp_path))
    assert rerun.returncode == 0 and "resuming from checkpoint" in rerun.stderr and "at step 20/40" in rerun.stderr
    ours, theirs = (torch.load(folder / "model.pt")["state_dict"] for folder in (full, straight))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    ours, theirs = (json.loads((folder / "metrics.json").read_text()) for folder in (full, straight))
    assert {k: v for k, v in ours.pop("training").items() if k not in BOOKKEEPING} == \
        {k: v for k, v in theirs.pop("training").items() if k not in BOOKKEEPING}
    assert ours == theirs

    # a result that cannot be written: the states of the extraction job
    states = full / "states.parquet"
    extract = ("extract-states", "--data", json.dumps(dataclasses.asdict(DATA)), "--extract",
               '{"n_train_states": 2000}', "--model", full / "model.pt", "--train-data", tmp_path / "train.parquet",
               "--valid-data", tmp_path / "valid.parquet", "--size", 8, "--device", "cpu", "--out", states)
    failed = job(*extract, limit=4096)
    assert failed.returncode == 1 and f"cannot write {states} (" in failed.stderr, failed.stderr
    assert not states.exists() and not list(full.glob("*.tmp"))
    assert job(*extract).returncode == 0 and states.stat().st_size > 4096
