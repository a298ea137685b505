"""Speeds: training and analysis steps per second, concurrent jobs on one device, the paper grid's
projected wall time (gpu-check's benchmark half), and training with nn.GRU on packed batches
against the unrolled kernel (`python -m onion benchmark-training`)."""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from onion.config import DataConfig, TrainConfig
from onion.data import SequenceSet, make_datasets, random_sequences
from onion.interventions import InterventionConfig, intervention_step, make_intervention, train_intervention
from onion.log import log
from onion.model import RepeatRNN
from onion.model.unrolled import frozen_runner
from onion.names import GRU_PROBE_KINDS, INTERVENTION_KINDS, PROBE_KINDS, ROTATIONS
from onion.probes import ProbeConfig, train_probe
from onion.runtime import FALLBACKS, kernel_ran, resolve_device, synchronize
from onion.training import make_optimizer, train_model, training_kernel

LOOPS = [("train", "model")] + [("intervention", k) for k in INTERVENTION_KINDS] + \
        [("probe", k) for k in PROBE_KINDS]
DATA = DataConfig(n_train=20_000, n_valid=200, seed=0)  # the paper's lengths and vocabulary


def loops_of(kernel: str) -> list[tuple[str, str]]:
    """The loops a kernel (onion.names.KERNELS) changes: every loop for nn, the GRU loops (training,
    the interventions on the frozen GRU, the GRU probes) for unrolled."""
    return [(loop, kind) for loop, kind in LOOPS
            if kernel == "nn" or loop != "probe" or kind in GRU_PROBE_KINDS]


@dataclasses.dataclass
class Setup:
    """A model of one size with its data and final states, on the CPU."""

    size: int
    model: RepeatRNN
    train: SequenceSet
    states: np.ndarray  # [n, N] final states of the first n training sequences
    probe_data: SequenceSet


def make_setup(size: int, seed: int = 0, n_states: int = 4096) -> Setup:
    train, _ = make_datasets(DATA)
    torch.manual_seed(seed)
    model = RepeatRNN(DATA.n_symbols, size)
    probe_data = SequenceSet(train.tokens[:n_states], train.lengths[:n_states])
    with torch.no_grad():
        states = model.encode(torch.as_tensor(probe_data.tokens), torch.as_tensor(probe_data.lengths))
    return Setup(size, model, train, states.numpy(), probe_data)


# --- speed -------------------------------------------------------------------------------------

def measure_speeds(setup: Setup, device, steps: int, warmup: int = 3, kernel: str = "nn") -> list[dict]:
    """Steps/s of the real loops (train_model, train_intervention, train_probe) with `kernel`, each
    after a short warm-up run of its own (for unrolled: its compilation)."""
    rows = []
    quiet = dict(checkpoint_every=0, log_every=10**9)
    for loop, kind in loops_of(kernel):
        for n in (warmup, steps):
            since = len(FALLBACKS)  # which kernel ran the timed run
            torch.manual_seed(0)
            if loop == "train":
                model = RepeatRNN(DATA.n_symbols, setup.size)
                model.load_state_dict(setup.model.state_dict())
                record = train_model(model, setup.train, setup.train, TrainConfig(steps=n, eval_every=0, **quiet),
                                     0, device, kernel=kernel)
            elif loop == "intervention":
                model = RepeatRNN(DATA.n_symbols, setup.size)
                model.load_state_dict(setup.model.state_dict())
                _, record = train_intervention(model, kind, setup.train, InterventionConfig(steps=n, **quiet),
                                               0, device, DATA.max_length, kernel=kernel)
            else:
                _, record = train_probe(kind, setup.states, setup.probe_data, DATA.n_symbols,
                                        ProbeConfig(steps=n, **quiet), 0, device, kernel=kernel)
        rows.append({"loop": loop, "kind": kind, "kernel": kernel, "size": setup.size, "steps": steps,
                     "steps_per_second": steps / record["seconds_this_run"], "ran": kernel_ran(kernel, since)})
        log(f"N={setup.size} {loop} {kind} ({kernel}): {rows[-1]['steps_per_second']:.1f} steps/s")
    return rows


def worker(size: int, steps: int, device: str, start_at: float) -> dict:
    """One training job for the concurrency measurement: set up and warm up, wait for the common
    start time, train `steps` steps; its own steps/s."""
    device = resolve_device(device)
    setup = make_setup(size)
    train_model(setup.model, setup.train, setup.train,
                TrainConfig(steps=3, eval_every=0, checkpoint_every=0, log_every=10**9), 0, device)
    late = max(0.0, time.time() - start_at)  # > 0: the start-up allowance was too short
    time.sleep(max(0.0, start_at - time.time()))
    record = train_model(setup.model, setup.train, setup.train,
                         TrainConfig(steps=steps, eval_every=0, checkpoint_every=0, log_every=10**9),
                         0, device)
    return {"steps_per_second": record["steps_per_second"], "late_seconds": late}


def measure_concurrency(size: int, steps: int, device: str, jobs: list[int],
                        startup_seconds: float, worker_args: tuple = ()) -> list[dict]:
    """Aggregate training steps/s of k concurrent jobs on `device` (one thread each; "cuda:0"
    puts all k on that GPU), all starting their timed loop at the same moment. A failed worker
    stops it with the end of the worker's error output."""
    rows = []
    for k in jobs:
        start_at = time.time() + startup_seconds
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "onion", "gpu-check", "--worker", "--sizes", str(size),
                   "--steps", str(steps), "--device", device, "--start-at", str(start_at), *worker_args]
        errs = [tempfile.TemporaryFile("w+") for _ in range(k)]  # files: a full pipe would stall a worker
        procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env) for err in errs]
        reports = []
        try:
            for proc, err in zip(procs, errs):
                out, _ = proc.communicate()
                if proc.returncode != 0:
                    err.seek(0)
                    raise RuntimeError(f"a gpu-check worker failed (exit {proc.returncode}): {err.read()[-2000:]}")
                reports.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for proc, err in zip(procs, errs):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                err.close()
        speeds = [r["steps_per_second"] for r in reports]
        rows.append({"size": size, "jobs": k, "per_job_steps_per_second": speeds,
                     "aggregate_steps_per_second": sum(speeds),
                     "late_start_seconds": max(r["late_seconds"] for r in reports)})
        log(f"N={size}, {k} concurrent training jobs: {sum(speeds):.1f} steps/s together")
    return rows


# --- projection --------------------------------------------------------------------------------

def speed_at(speeds: list[dict], loop: str, kind: str, size: int) -> float:
    """Measured steps/s of loop/kind at `size`; between measured sizes log-log interpolated, beyond
    them the nearest measured size scaled as N^-2 (larger) or held (smaller)."""
    points = sorted((r["size"], r["steps_per_second"]) for r in speeds if r["loop"] == loop and r["kind"] == kind)
    sizes = np.log([p[0] for p in points])
    rates = np.log([p[1] for p in points])
    if size >= points[-1][0]:
        return points[-1][1] * (points[-1][0] / size) ** 2
    return float(np.exp(np.interp(math.log(size), sizes, rates)))


def grid_jobs(models: list[tuple[str, int, int]], steps: dict, speeds: list[dict],
              efficiency: float = 1.0) -> list[tuple[float, list[float]]]:
    """Per model: (training seconds, [seconds of each analysis]) at the measured speeds, each job
    slowed by `efficiency` (its share of the device when slots are shared)."""
    jobs = []
    for _, size, _ in models:
        train = steps["train"] / (speed_at(speeds, "train", "model", size) * efficiency)
        analyses = [steps[loop] / (speed_at(speeds, loop, kind, size) * efficiency)
                    for loop, kind in LOOPS[1:]]
        jobs.append((train, analyses))
    return jobs


def simulate_wall_time(jobs: list[tuple[float, list[float]]], workers: int) -> float:
    """Wall time of the grid on `workers` parallel job slots: longest job first among those ready,
    every model's analyses ready when its training ends (list scheduling)."""
    free = [0.0] * workers  # when each slot is next free
    heapq.heapify(free)
    pending, finish = [], 0.0
    for train, analyses in sorted(jobs, key=lambda job: -job[0]):
        start = heapq.heappop(free)
        end = start + train
        heapq.heappush(free, end)
        pending.extend((end, seconds) for seconds in analyses)
    for release, seconds in sorted(pending, key=lambda p: (p[0], -p[1])):
        start = max(heapq.heappop(free), release)
        heapq.heappush(free, start + seconds)
        finish = max(finish, start + seconds)
    return finish


def paper_grid(config_path: str = "config.yaml") -> tuple[list, dict]:
    """The paper grid's models and the steps of its training, intervention and probe jobs, as the
    workflow would run them (config.yaml with the grid's overrides)."""
    from onion.config_checks import grid_settings, load_yaml
    config = load_yaml(config_path)
    config["grid"] = "paper"
    models = [(v, s, seed) for block in config["grids"]["paper"]["models"] for v in block["variants"]
              for s in block["sizes"] for seed in block["seeds"]]
    steps = {"train": grid_settings(config, "train")["steps"],
             "intervention": grid_settings(config, "interventions")["steps"],
             "probe": grid_settings(config, "probes")["steps"]}
    return models, steps


def project(speeds: list[dict], concurrency: list[dict], workers_per_device: dict[str, int],
            config_path: str = "config.yaml") -> list[dict]:
    """Projected wall time of the paper grid for each named setting (name -> parallel job slots).
    With slots k on one device, each job runs at the measured k-job aggregate speed / k."""
    models, steps = paper_grid(config_path)
    by_jobs = {r["jobs"]: r["aggregate_steps_per_second"] for r in concurrency}
    single = by_jobs.get(1)
    rows = []
    for name, (slots, jobs_per_device) in workers_per_device.items():
        efficiency = 1.0
        if single and jobs_per_device in by_jobs:
            efficiency = by_jobs[jobs_per_device] / (jobs_per_device * single)
        jobs = grid_jobs(models, steps, speeds, efficiency)
        job_hours = sum(t + sum(a) for t, a in jobs) / 3600
        wall = simulate_wall_time(jobs, slots)
        critical = max(t + max(a) for t, a in jobs)
        rows.append({"setting": name, "parallel_jobs": slots, "jobs_per_device": jobs_per_device,
                     "per_job_efficiency": efficiency, "job_hours": job_hours,
                     "wall_hours": wall / 3600, "critical_path_hours": critical / 3600})
        log(f"paper grid on {name}: {wall / 3600:.1f} h wall ({job_hours:.0f} job-hours, "
            f"critical path {critical / 3600:.1f} h)")
    return rows


def _interleaved(loops: dict, steps: int, rounds: int, warmup: int = 4) -> tuple[dict, dict, int]:
    """Time each of `loops` (name -> timed(start, end), seconds) over the same steps, in `rounds`
    alternating rounds so that all see the same machine load, after their first step (compilation,
    for the unrolled kernel) and `warmup` more. Returns (first step's seconds, seconds, steps timed)."""
    first = {name: loop(0, 1) for name, loop in loops.items()}
    for loop in loops.values():
        loop(1, 1 + warmup)
    elapsed = dict.fromkeys(loops, 0.0)
    per_round = steps // rounds
    for r in range(rounds):
        for name, loop in loops.items():
            elapsed[name] += loop(1 + warmup + r * per_round, 1 + warmup + (r + 1) * per_round)
    return first, elapsed, rounds * per_round


def benchmark_training(sizes, steps: int, device, rounds: int = 4, seed: int = 0, cell: str = "gru",
                       precisions=("fp32",)):
    """Model-steps/s of training a `cell` model with kernel nn (torch.nn's layer on packed batches)
    and the unrolled one (onion.model.unrolled, compiled) in each of `precisions` (fp32: column
    unrolled, bf16: unrolled_bf16) per size, interleaved in rounds on one model each so that all
    see the same machine load, and the unrolled kernels' compile time (their first step). Speed-ups
    are against nn. Batches are the paper's (256 sequences, lengths 2-9). Returns a pandas DataFrame."""
    import pandas as pd  # here: gpu-check runs on images without pandas
    data_cfg, train_cfg = DataConfig(), TrainConfig()
    data = random_sequences(np.random.default_rng(seed), max(steps, 5) * train_cfg.batch_size, data_cfg)
    kernels = {"nn": ("nn", "fp32"), **{"unrolled" + ("" if p == "fp32" else f"_{p}"): ("unrolled", p)
                                        for p in precisions}}
    rows = []
    for size in sizes:
        loops = {name: _training_loop(kernel, size, data, train_cfg, device, cell, precision)
                 for name, (kernel, precision) in kernels.items()}
        first, elapsed, done = _interleaved(loops, steps, rounds)
        speed = {name: done / seconds for name, seconds in elapsed.items()}
        row = {"cell": cell, "size": size, "device": str(device), "threads": torch.get_num_threads(),
               "steps": done, **{f"{name}_steps_per_s": speed[name] for name in loops}}
        for name in list(loops)[1:]:  # after nn
            row["speedup" if name == "unrolled" else f"{name}_speedup"] = speed[name] / speed["nn"]
        row.update({f"{name}_compile_s": first[name] - first["nn"] for name in loops if name != "nn"})
        rows.append(row)
        log(f"{cell} N={size}: " + ", ".join(f"{name} {speed[name]:.2f} steps/s" for name in loops))
    return pd.DataFrame(rows)


def _training_loop(kernel: str, size: int, data: SequenceSet, cfg: TrainConfig, device, cell: str = "gru",
                   precision: str = "fp32"):
    """A function timing training steps start..end-1 of a fresh `cell` model with `kernel` and
    `precision`, as train_model takes them (seconds, device work included)."""
    torch.manual_seed(0)
    model = RepeatRNN(DATA.n_symbols, size, cell=cell).to(device).train()
    rows, update = training_kernel(kernel, model, make_optimizer(model.parameters(), cfg), data, device,
                                   precision)

    def timed(start: int, end: int) -> float:
        synchronize(device)
        began = time.perf_counter()
        for step in range(start, end):
            update(rows(np.arange(step * cfg.batch_size, (step + 1) * cfg.batch_size) % len(data)))
        synchronize(device)
        return time.perf_counter() - began

    return timed


def benchmark_das(sizes, steps: int, device, rounds: int = 4, seed: int = 0, precisions=("fp32",),
                  rotations=ROTATIONS):
    """Linear unigram DAS on a frozen GRU of each size (the unrolled kernel): steps/s with each
    orthogonal map (interventions.rotation) and frozen-model precision, interleaved in rounds, and
    the share of a step that R and its backward take: 1 − (time with R a fixed matrix) / (time).
    Batches of 256 length-9 targets. Returns a pandas DataFrame."""
    import pandas as pd
    data = random_sequences(np.random.default_rng(seed), 20_000, DataConfig(), length=9)
    tokens, lengths = torch.as_tensor(data.tokens, device=device), torch.as_tensor(data.lengths, device=device)
    rows = []
    for size in sizes:
        torch.manual_seed(seed)
        model = RepeatRNN(DATA.n_symbols, size).to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        loops = {(rotation, precision): _das_loop(model, rotation, precision, tokens, lengths, device)
                 for precision in precisions for rotation in (*rotations, "fixed")}
        _, elapsed, done = _interleaved(loops, steps, rounds, warmup=1)  # fixed shapes: compiled at step 0
        for precision in precisions:
            for rotation in rotations:
                step, fixed = elapsed[(rotation, precision)] / done, elapsed[("fixed", precision)] / done
                rows.append({"size": size, "rotation": rotation, "precision": precision,
                             "threads": torch.get_num_threads(), "steps": done, "steps_per_s": 1 / step,
                             "fixed_R_steps_per_s": 1 / fixed, "rotation_share": 1 - fixed / step})
                log(f"linear_unigram DAS N={size} {rotation} {precision}: {1 / step:.3f} steps/s "
                    f"({1 / fixed:.3f} with R fixed: R and its backward {1 - fixed / step:.0%} of a step)")
    return pd.DataFrame(rows)


def _das_loop(model: RepeatRNN, rotation: str, precision: str, tokens: torch.Tensor, lengths: torch.Tensor,
              device):
    """A function timing linear unigram DAS steps start..end-1 on the frozen `model`, as
    train_intervention takes them (seconds); rotation "fixed": R a constant matrix, not learned."""
    cfg = InterventionConfig(precision=precision, **({} if rotation == "fixed" else {"rotation": rotation}))
    torch.manual_seed(0)
    das = make_intervention("linear_unigram", DATA.n_symbols, model.state_size, DATA.max_length,
                            cfg.rotation).to(device)
    if rotation == "fixed":
        das.rotation = torch.nn.Linear(model.state_size, model.state_size, bias=False).to(device).requires_grad_(False)
    optimizer = make_optimizer([p for p in das.parameters() if p.requires_grad], cfg)
    runner = frozen_runner(model, "unrolled", device, precision)

    def timed(start: int, end: int) -> float:
        synchronize(device)
        began = time.perf_counter()
        for step in range(start, end):
            intervention_step(runner, das, optimizer, "linear_unigram", tokens, lengths, cfg.batch_size, 0, step)
        synchronize(device)
        return time.perf_counter() - began

    return timed


def run_benchmark_training(sizes, steps: int, device, rounds: int = 4, out=None, cells=("gru",),
                           precisions=("fp32",), das: bool = False) -> None:
    """The benchmark-training command: print the table (one row per cell and size; with `das`,
    benchmark_das's table instead), and write it as CSV to `out` if given."""
    import pandas as pd
    if das:
        results = benchmark_das(sizes, steps, device, rounds, precisions=precisions)
    else:
        results = pd.concat([benchmark_training(sizes, steps, device, rounds, cell=cell, precisions=precisions)
                             for cell in cells], ignore_index=True)
    if out:
        results.to_csv(out, index=False)
    print(results.to_string(index=False))
