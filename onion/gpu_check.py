"""`python -m onion gpu-check`: the CUDA path checked against the CPU, then its speed measured
(onion.benchmark) and the paper grid's wall time projected from the measured speeds.

On a CUDA machine it runs, at N = 64 and N = 1024: one batch of every loop (training, the four
interventions, the five probes) on the GPU and on the CPU, comparing loss and gradients; a few steps
of each loop with CUDA's synchronisation check on (a step that waits for the GPU is an error); the
real loops for timing; and 1, 4 and 8 concurrent training jobs sharing the GPU. Without CUDA it
runs the same code on the CPU at small sizes (the test suite's version).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from onion import benchmark
from onion.benchmark import DATA, Setup, loops_of, make_setup
from onion.config import TrainConfig
from onion.files import write_json
from onion.interventions import InterventionConfig, intervention_step, make_counterfactuals, make_intervention
from onion.log import log
from onion.model import RepeatRNN
from onion.model.unrolled import compiled_loss, frozen_runner
from onion.probes import ProbeConfig, make_probe, make_probe_optimizer, probe_step
from onion.runtime import release_gpu_slots, resolve_device, synchronize
from onion.training import (make_optimizer, packed_batch_loss, packed_batches, training_kernel,
                            unrolled_batch_loss)

CUDA_DEFAULTS = {"sizes": [64, 1024], "steps": 200, "jobs": [1, 4, 8], "concurrency_size": 64,
                 "concurrency_steps": 2000, "startup_seconds": 40.0, "kernels": ("nn", "unrolled")}
CPU_DEFAULTS = {"sizes": [16, 32], "steps": 5, "jobs": [1, 2], "concurrency_size": 16,
                "concurrency_steps": 20, "startup_seconds": 15.0,
                "kernels": ("nn", "unrolled")}  # the scaled-down CPU version


def _loss_and_grads(loop: str, kind: str, setup: Setup, device, seed: int = 0, kernel: str = "nn"):
    """Loss and gradients of one batch of `loop`/`kind` with `kernel` (nn or unrolled), every module
    initialised on the CPU and every random draw made there, then moved to `device`. Interventions
    run in eval mode (no Gumbel noise) and probes draw nothing, so both devices compute the same
    function."""
    torch.manual_seed(seed)
    model = RepeatRNN(DATA.n_symbols, setup.size)
    model.load_state_dict(setup.model.state_dict())
    model.to(device)
    idx = np.random.default_rng(seed).integers(0, len(setup.train), size=256)
    if loop == "train":
        params = list(model.parameters())
        inputs, targets, batch_sizes = packed_batches(model, setup.train, device)(idx)
        loss = packed_batch_loss(model, inputs, targets, batch_sizes) if kernel == "nn" else \
            unrolled_batch_loss(model, compiled_loss(), inputs, targets, batch_sizes)
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
        runner = frozen_runner(model, kernel, device)
        loss = runner.decode_loss(module(runner, batch), batch["target"], batch["lengths"])
    else:
        probe = make_probe(kind, setup.size, DATA.n_symbols, DATA.max_length).to(device)
        if kernel == "unrolled":
            probe.unroll()
        params = list(probe.parameters())
        rows = idx % len(setup.states)
        loss = probe.loss(torch.as_tensor(setup.states[rows], device=device),
                          torch.as_tensor(setup.probe_data.tokens[rows], device=device),
                          torch.as_tensor(setup.probe_data.lengths[rows], device=device))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return float(loss.detach()), [g.cpu() for g in grads if g is not None]


def compare_with_cpu(setup: Setup, device, kernel: str = "nn") -> list[dict]:
    """Per loop: relative difference of the loss and of the gradients (max |Δg| / max |g|) between
    `kernel` on `device` and nn.GRU on the CPU."""
    rows = []
    for loop, kind in loops_of(kernel):
        cpu_loss, cpu_grads = _loss_and_grads(loop, kind, setup, "cpu")
        dev_loss, dev_grads = _loss_and_grads(loop, kind, setup, device, kernel=kernel)
        loss_diff = abs(dev_loss - cpu_loss) / max(abs(cpu_loss), 1e-12)
        grad_diff = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
                        for a, b in zip(dev_grads, cpu_grads))
        # TF32 in cuDNN's GRU kernels leaves ~1e-3 relative differences; a wrong path leaves O(1)
        rows.append({"loop": loop, "kind": kind, "kernel": kernel, "size": setup.size, "cpu_loss": cpu_loss,
                     "device_loss": dev_loss, "loss_rel_diff": loss_diff, "grad_rel_diff": grad_diff,
                     "agree": loss_diff < 5e-3 and grad_diff < 5e-2})
    return rows


# --- no step waits for the GPU -----------------------------------------------------------------

def _step_function(loop: str, kind: str, setup: Setup, device, kernel: str = "nn"):
    """A closure running one step of the loop's own step function with `kernel`, set up as the loop
    does."""
    model = RepeatRNN(DATA.n_symbols, setup.size).to(device)
    model.load_state_dict(setup.model.state_dict())
    if loop == "train":
        rows, update = training_kernel(kernel, model, make_optimizer(model.parameters(), TrainConfig()),
                                       setup.train, device)
        return lambda step: update(rows(np.arange(step * 256, (step + 1) * 256)))
    if loop == "intervention":
        for p in model.parameters():
            p.requires_grad_(False)
        model.train()
        module = make_intervention(kind, DATA.n_symbols, setup.size, DATA.max_length).to(device).train()
        optimizer = make_optimizer(module.parameters(), InterventionConfig())
        tokens = torch.as_tensor(setup.train.tokens, device=device)
        lengths = torch.as_tensor(setup.train.lengths, device=device)
        runner = frozen_runner(model, kernel, device)
        return lambda step: intervention_step(runner, module, optimizer, kind, tokens, lengths, 256, 0, step)
    probe = make_probe(kind, setup.size, DATA.n_symbols, DATA.max_length).to(device).train()
    if kernel == "unrolled":
        probe.unroll()
    optimizer = make_probe_optimizer(probe, ProbeConfig())
    states = torch.as_tensor(setup.states, device=device)
    tokens = torch.as_tensor(setup.probe_data.tokens, device=device)
    lengths = torch.as_tensor(setup.probe_data.lengths, device=device)
    index = torch.randint(len(states), (64, 256), device=device)
    return lambda step: probe_step(probe, optimizer, states[index[step]], tokens[index[step]],
                                   lengths[index[step]], 1e-3)


def check_no_sync(setup: Setup, device, steps: int = 5, kernel: str = "nn") -> list[dict]:
    """Each loop's step with `kernel` and torch.cuda's sync debug mode set to 'error' after two
    warm-up steps: any host-device synchronisation inside a step raises. CPU: not applicable (None)."""
    rows = []
    for loop, kind in loops_of(kernel):
        step = _step_function(loop, kind, setup, device, kernel)
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
        rows.append({"loop": loop, "kind": kind, "kernel": kernel, "size": setup.size,
                     "sync_free": None if torch.device(device).type != "cuda" else error is None,
                     "error": error})
    return rows


def run(device: str, sizes: list[int], steps: int, jobs: list[int], concurrency_size: int,
        concurrency_steps: int, startup_seconds: float, out: str | None,
        config_path: str = "config.yaml", checks_only: bool = False, kernels: tuple = ("nn",)) -> dict:
    """The checks, then (unless `checks_only`) the benchmark and the projection, written to `out`
    as JSON; returns the result. "passed" is about the checks only. Each of `kernels` is checked
    and timed; the projection uses nn's speeds."""
    began = time.perf_counter()
    dev = resolve_device(device)
    result = {"device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda"
              else "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "agreement": [], "sync": [], "speeds": [], "concurrency": [], "projection": []}
    for size in sizes:
        setup = make_setup(size)
        for kernel in kernels:
            log(f"N={size}: one batch of every {kernel} loop on {dev} and of the nn loop on the CPU")
            result["agreement"] += compare_with_cpu(setup, dev, kernel)
            result["sync"] += check_no_sync(setup, dev, kernel=kernel)
            if not checks_only:
                result["speeds"] += benchmark.measure_speeds(setup, dev, steps, kernel=kernel)
    if not checks_only:
        if dev.type == "cuda":
            release_gpu_slots()  # the workers take the slots
        result["concurrency"] = benchmark.measure_concurrency(concurrency_size, concurrency_steps, dev.type,
                                                              jobs, startup_seconds)
        settings = {f"{k} jobs on this {'GPU' if dev.type == 'cuda' else 'machine'}": (k, k) for k in jobs}
        if dev.type == "cpu":
            settings[f"16 nodes x {os.cpu_count()} cores like this one"] = (16 * os.cpu_count(), max(jobs))
        if os.path.exists(config_path):
            nn_speeds = [row for row in result["speeds"] if row["kernel"] == "nn"]
            result["projection"] = benchmark.project(nn_speeds, result["concurrency"], settings, config_path)
    result["passed"] = all(r["agree"] for r in result["agreement"]) and \
        all(r["sync_free"] is not False for r in result["sync"])
    result["seconds"] = time.perf_counter() - began
    if out:
        write_json(out, result)
    return result


def run_gpu_check(device: str, out: str, config_path: str = "config.yaml", checks_only: bool = False,
                  **settings) -> dict:
    """The gpu-check command: `settings` left None take the CUDA defaults on a GPU, the scaled-down
    CPU ones otherwise; logs every disagreement and every step that waits for the GPU."""
    defaults = CUDA_DEFAULTS if torch.cuda.is_available() and device != "cpu" else CPU_DEFAULTS
    settings = {k: defaults[k] if settings.get(k) is None else settings[k] for k in defaults}
    result = run(device, out=out, config_path=config_path, checks_only=checks_only, **settings)
    for row in result["agreement"]:
        log(f"N={row['size']} {row['loop']} {row['kind']} ({row['kernel']}): loss {row['cpu_loss']:.5f} (CPU) vs "
            f"{row['device_loss']:.5f}; gradients differ by {row['grad_rel_diff']:.1e} relative"
            f"{'' if row['agree'] else '  <-- DISAGREE'}")
    for row in result["sync"]:
        if row["sync_free"] is False:
            log(f"N={row['size']} {row['loop']} {row['kind']}: a step waits for the GPU: {row['error']}")
    log(f"gpu-check {'passed' if result['passed'] else 'FAILED'} on {result['device_name']} in "
        f"{result['seconds']:.0f} s; results in {out}")
    return result
