"""`python -m onion gpu-check`: the CUDA path checked against the CPU, its speed measured, and the
paper grid's wall time projected from the measured speeds.

On a CUDA machine it runs, at N = 64 and N = 1024: one batch of every loop (training, the four
interventions, the five probes) on the GPU and on the CPU, comparing loss and gradients; a few steps
of each loop with CUDA's synchronisation check on (a step that waits for the GPU is an error); the
real loops for timing; and 1, 4 and 8 concurrent training jobs sharing the GPU. Without CUDA it
runs the same code on the CPU at small sizes (the test suite's version).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch

from onion.config import DataConfig, TrainConfig
from onion.counterfactuals import KINDS as INTERVENTION_KINDS
from onion.counterfactuals import make_counterfactuals
from onion.data import SequenceSet, make_datasets
from onion.interventions import (InterventionConfig, intervention_step, make_intervention,
                                 train_intervention)
from onion.model import RepeatRNN
from onion.probes import KINDS as PROBE_KINDS
from onion.probes import ProbeConfig, make_probe, make_probe_optimizer, probe_step, train_probe
from onion.runtime import log, synchronize
from onion.training import (make_optimizer, packed_batch_loss, packed_batches, sequence_loss,
                            train_model, train_step)

LOOPS = [("train", "model")] + [("intervention", k) for k in INTERVENTION_KINDS] + \
        [("probe", k) for k in PROBE_KINDS]
DATA = DataConfig(n_train=20_000, n_valid=200, seed=0)  # the paper's lengths and vocabulary


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


# --- the same batch on both devices ------------------------------------------------------------

def _loss_and_grads(loop: str, kind: str, setup: Setup, device, seed: int = 0):
    """Loss and gradients of one batch of `loop`/`kind`, every module initialised on the CPU and
    every random draw made there, then moved to `device`. Interventions and probes run in eval
    mode (no Gumbel noise), so both devices compute the same function."""
    torch.manual_seed(seed)
    model = RepeatRNN(DATA.n_symbols, setup.size)
    model.load_state_dict(setup.model.state_dict())
    model.to(device)
    idx = np.random.default_rng(seed).integers(0, len(setup.train), size=256)
    if loop == "train":
        params = list(model.parameters())
        loss = packed_batch_loss(model, *packed_batches(model, setup.train, device)(idx))
    elif loop == "intervention":
        module = make_intervention(kind, DATA.n_symbols, setup.size, DATA.max_length).eval()
        generator = torch.Generator().manual_seed(seed)
        cf = make_counterfactuals(kind, torch.as_tensor(setup.train.tokens[idx]),
                                  torch.as_tensor(setup.train.lengths[idx]), generator, DATA.n_symbols)
        module.to(device)
        params = [p for p in module.parameters()]
        for p in model.parameters():
            p.requires_grad_(False)
        batch = cf.to(device).batch()
        logits = model.decode(module(model, batch), model.decoder_inputs(batch["target"]))
        loss = sequence_loss(logits, batch["target"], batch["lengths"])
    else:
        probe = make_probe(kind, setup.size, DATA.n_symbols, DATA.max_length).to(device)
        params = list(probe.parameters())
        rows = idx % len(setup.states)
        loss = probe.loss(torch.as_tensor(setup.states[rows], device=device),
                          torch.as_tensor(setup.probe_data.tokens[rows], device=device),
                          torch.as_tensor(setup.probe_data.lengths[rows], device=device))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return float(loss.detach()), [g.cpu() for g in grads if g is not None]


def compare_with_cpu(setup: Setup, device) -> list[dict]:
    """Per loop: relative difference of the loss and of the gradients (max |Δg| / max |g|)."""
    rows = []
    for loop, kind in LOOPS:
        cpu_loss, cpu_grads = _loss_and_grads(loop, kind, setup, "cpu")
        dev_loss, dev_grads = _loss_and_grads(loop, kind, setup, device)
        loss_diff = abs(dev_loss - cpu_loss) / max(abs(cpu_loss), 1e-12)
        grad_diff = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
                        for a, b in zip(dev_grads, cpu_grads))
        # TF32 in cuDNN's GRU kernels leaves ~1e-3 relative differences; a wrong path leaves O(1)
        rows.append({"loop": loop, "kind": kind, "size": setup.size, "cpu_loss": cpu_loss,
                     "device_loss": dev_loss, "loss_rel_diff": loss_diff, "grad_rel_diff": grad_diff,
                     "agree": loss_diff < 5e-3 and grad_diff < 5e-2})
    return rows


# --- no step waits for the GPU -----------------------------------------------------------------

def _step_function(loop: str, kind: str, setup: Setup, device):
    """A closure running one step of the loop's own step function, set up as the loop does."""
    model = RepeatRNN(DATA.n_symbols, setup.size).to(device)
    model.load_state_dict(setup.model.state_dict())
    if loop == "train":
        optimizer, batches = make_optimizer(model.parameters(), TrainConfig()), packed_batches(model, setup.train, device)
        return lambda step: train_step(model, optimizer, *batches(np.arange(step * 256, (step + 1) * 256)))
    if loop == "intervention":
        for p in model.parameters():
            p.requires_grad_(False)
        model.train()
        module = make_intervention(kind, DATA.n_symbols, setup.size, DATA.max_length).to(device).train()
        optimizer = make_optimizer(module.parameters(), InterventionConfig())
        tokens = torch.as_tensor(setup.train.tokens, device=device)
        lengths = torch.as_tensor(setup.train.lengths, device=device)
        return lambda step: intervention_step(model, module, optimizer, kind, tokens, lengths, 256, 0, step)
    probe = make_probe(kind, setup.size, DATA.n_symbols, DATA.max_length).to(device).train()
    optimizer = make_probe_optimizer(probe, ProbeConfig())
    states = torch.as_tensor(setup.states, device=device)
    tokens = torch.as_tensor(setup.probe_data.tokens, device=device)
    lengths = torch.as_tensor(setup.probe_data.lengths, device=device)
    index = torch.randint(len(states), (64, 256), device=device)
    return lambda step: probe_step(probe, optimizer, states[index[step]], tokens[index[step]],
                                   lengths[index[step]], 1e-3)


def check_no_sync(setup: Setup, device, steps: int = 5) -> list[dict]:
    """Each loop's step with torch.cuda's sync debug mode set to 'error' after two warm-up steps:
    any host-device synchronisation inside a step raises. CPU: not applicable (None)."""
    rows = []
    for loop, kind in LOOPS:
        step = _step_function(loop, kind, setup, device)
        error = None
        if torch.device(device).type == "cuda":
            step(0), step(1)
            synchronize(device)
            torch.cuda.set_sync_debug_mode("error")
            try:
                for i in range(2, 2 + steps):
                    step(i)
            except RuntimeError as err:
                error = str(err).splitlines()[0][:300]
            finally:
                torch.cuda.set_sync_debug_mode("default")
        else:
            for i in range(2):
                step(i)
        rows.append({"loop": loop, "kind": kind, "size": setup.size,
                     "sync_free": None if torch.device(device).type != "cuda" else error is None,
                     "error": error})
    return rows


# --- speed -------------------------------------------------------------------------------------

def measure_speeds(setup: Setup, device, steps: int, warmup: int = 3) -> list[dict]:
    """Steps/s of the real loops (train_model, train_intervention, train_probe), each after a
    short warm-up run of its own."""
    rows = []
    quiet = dict(checkpoint_every=0, log_every=10**9)
    for loop, kind in LOOPS:
        for n in (warmup, steps):
            torch.manual_seed(0)
            if loop == "train":
                model = RepeatRNN(DATA.n_symbols, setup.size)
                model.load_state_dict(setup.model.state_dict())
                record = train_model(model, setup.train, setup.train, TrainConfig(steps=n, eval_every=0, **quiet),
                                     0, device)
            elif loop == "intervention":
                model = RepeatRNN(DATA.n_symbols, setup.size)
                model.load_state_dict(setup.model.state_dict())
                _, record = train_intervention(model, kind, setup.train, InterventionConfig(steps=n, **quiet),
                                               0, device, DATA.max_length)
            else:
                _, record = train_probe(kind, setup.states, setup.probe_data, DATA.n_symbols,
                                        ProbeConfig(steps=n, **quiet), 0, device)
        rows.append({"loop": loop, "kind": kind, "size": setup.size, "steps": steps,
                     "steps_per_second": steps / record["seconds_this_run"]})
        log(f"N={setup.size} {loop} {kind}: {rows[-1]['steps_per_second']:.1f} steps/s")
    return rows


def worker(size: int, steps: int, device: str, start_at: float) -> dict:
    """One training job for the concurrency measurement: set up and warm up, wait for the common
    start time, train `steps` steps; its own steps/s."""
    from onion.runtime import resolve_device
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
                        startup_seconds: float) -> list[dict]:
    """Aggregate training steps/s of k concurrent jobs on the device (one thread each), all
    starting their timed loop at the same moment."""
    rows = []
    for k in jobs:
        start_at = time.time() + startup_seconds
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "onion", "gpu-check", "--worker", "--sizes", str(size),
                   "--steps", str(steps), "--device", device, "--start-at", str(start_at)]
        procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, env=env) for _ in range(k)]
        reports = []
        for proc in procs:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"a gpu-check worker failed (exit {proc.returncode})")
            reports.append(json.loads(out.strip().splitlines()[-1]))
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


def run(device: str, sizes: list[int], steps: int, jobs: list[int], concurrency_size: int,
        concurrency_steps: int, startup_seconds: float, out: str | None,
        config_path: str = "config.yaml") -> dict:
    """Everything above, written to `out` as JSON; returns the result."""
    from onion.runtime import resolve_device
    began = time.perf_counter()
    dev = resolve_device(device)
    result = {"device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda"
              else "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "agreement": [], "sync": [], "speeds": []}
    for size in sizes:
        setup = make_setup(size)
        log(f"N={size}: one batch of every loop on {dev} and on the CPU")
        result["agreement"] += compare_with_cpu(setup, dev)
        result["sync"] += check_no_sync(setup, dev)
        result["speeds"] += measure_speeds(setup, dev, steps)
    if dev.type == "cuda":
        from onion.runtime import release_gpu_slots
        release_gpu_slots()  # the workers take the slots
    result["concurrency"] = measure_concurrency(concurrency_size, concurrency_steps, dev.type, jobs,
                                                startup_seconds)
    settings = {f"{k} jobs on this {'GPU' if dev.type == 'cuda' else 'machine'}": (k, k) for k in jobs}
    if dev.type == "cpu":
        settings[f"16 nodes x {os.cpu_count()} cores like this one"] = (16 * os.cpu_count(), max(jobs))
    result["projection"] = project(result["speeds"], result["concurrency"], settings, config_path) \
        if os.path.exists(config_path) else []
    result["passed"] = all(r["agree"] for r in result["agreement"]) and \
        all(r["sync_free"] is not False for r in result["sync"])
    result["seconds"] = time.perf_counter() - began
    if out:
        from onion.files import write_json
        write_json(out, result)
    return result
