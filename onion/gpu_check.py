"""`python -m onion gpu-check`: the CUDA path checked against the CPU, then its speed measured
(onion.benchmark) and the paper grid's wall time projected from the measured speeds.

On a CUDA machine it runs, at N = 64 and N = 1024: one batch of every loop (training, the four
interventions, the five probes) on the GPU and on the CPU, comparing loss and gradients; a few steps
of each loop with CUDA's synchronisation check on (a step that waits for the GPU is an error); the
real loops for timing; and 1, 4 and 8 concurrent training jobs sharing the GPU. Linear DAS is
checked with both rotations: cayley must not wait for the GPU, matrix_exp (the default) does and is
exempt, with the reason in the JSON. At the first size the LSTM's interventions are checked too
(with torch.nn's LSTM they wait for the GPU: exempt, likewise). Without CUDA it runs the same code
on the CPU at small sizes (the test suite's version).

The JSON is rewritten after every row, so a run that crashes or is killed leaves what it measured;
non-finite numbers are written as the strings "nan", "inf", "-inf". Each row that ran the unrolled
kernel says whether it ran compiled or fell back to eager ("ran"); a fallback never passes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import traceback

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
from onion.names import LINEAR_INTERVENTION_KINDS, ROTATIONS
from onion.probes import ProbeConfig, make_probe, make_probe_optimizer, probe_step
from onion.probes.train import probe_batches
from onion.runtime import (FALLBACKS, kernel_ran, precision_settings, release_gpu_slots, resolve_device,
                           set_float32_precision, synchronize)
from onion.training import (make_optimizer, packed_batch_loss, packed_batches, training_kernel,
                            unrolled_batch_loss)

CUDA_DEFAULTS = {"sizes": [64, 1024], "steps": 200, "jobs": [1, 4, 8], "concurrency_size": 64,
                 "concurrency_steps": 2000, "startup_seconds": 40.0, "kernels": ("nn", "unrolled")}
CPU_DEFAULTS = {"sizes": [16, 32], "steps": 5, "jobs": [1, 2], "concurrency_size": 16,
                "concurrency_steps": 20, "startup_seconds": 15.0,
                "kernels": ("nn", "unrolled")}  # the scaled-down CPU version
LSTM_NN_WAITS = ("torch.nn's LSTM encodes packed (pack_padded_sequence), which reads the lengths back to "
                 "the host at every encode; the unrolled kernel never does (its row is checked)")
MATRIX_EXP_WAITS = ("linear DAS with rotation matrix_exp (torch's orthogonal()): ATen's CUDA matrix exponential "
                    "reads a norm back to the host and calls nonzero, forward and backward; rotation cayley "
                    "never reads back (its rows are checked)")


def sync_exemption(cell: str, loop: str, kind: str, kernel: str, rotation: str | None = None) -> str | None:
    """Why the steps of a loop may wait for the GPU without failing gpu-check (known waits that
    only slow it down), or None: they must not wait."""
    if rotation == "matrix_exp":
        return MATRIX_EXP_WAITS
    if cell == "lstm" and loop == "intervention" and kernel == "nn":
        return LSTM_NN_WAITS
    return None


def json_ready(value):
    """`value` with every non-finite float written as the string "nan", "inf" or "-inf" (strict
    JSON has no such numbers; gpu-check records them rather than refusing to write)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def _error(err: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}"


def lstm_setup(setup: Setup) -> Setup:
    """`setup`'s data with an LSTM of the same size (its interventions are checked; no probe states)."""
    torch.manual_seed(0)
    return dataclasses.replace(setup, model=RepeatRNN(DATA.n_symbols, setup.size, cell="lstm"), states=None)


def cases(setup: Setup, kernel: str) -> list[tuple[str, str, str | None]]:
    """(loop, kind, rotation) checked for `kernel` on `setup`: every loop the kernel changes for
    the GRU (onion.benchmark.loops_of), linear DAS with each rotation; the interventions for
    another cell, linear DAS with cayley."""
    rotations = ROTATIONS if setup.model.cell == "gru" else ("cayley",)
    return [(loop, kind, rotation) for loop, kind in loops_of(kernel)
            if setup.model.cell == "gru" or loop == "intervention"
            for rotation in (rotations if kind in LINEAR_INTERVENTION_KINDS else (None,))]


def _loss_and_grads(loop: str, kind: str, setup: Setup, device, seed: int = 0, kernel: str = "nn",
                    rotation: str | None = None):
    """Loss and gradients of one batch of `loop`/`kind` with `kernel` (nn or unrolled) and linear
    DAS's `rotation`, every module
    initialised on the CPU and every random draw made there, then moved to `device`. Interventions
    run in eval mode (no Gumbel noise) and probes draw nothing, so both devices compute the same
    function."""
    torch.manual_seed(seed)
    model = RepeatRNN(DATA.n_symbols, setup.size, cell=setup.model.cell)
    model.load_state_dict(setup.model.state_dict())
    model.to(device)
    idx = np.random.default_rng(seed).integers(0, len(setup.train), size=256)
    if loop == "train":
        params = list(model.parameters())
        inputs, targets, batch_sizes = packed_batches(model, setup.train, device)(idx)
        loss = packed_batch_loss(model, inputs, targets, batch_sizes) if kernel == "nn" else \
            unrolled_batch_loss(model, compiled_loss(), inputs, targets, batch_sizes)
    elif loop == "intervention":
        module = make_intervention(kind, DATA.n_symbols, model.state_size, DATA.max_length,
                                   rotation or "matrix_exp").eval()
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


def relative_difference(device_grads: list[torch.Tensor], cpu_grads: list[torch.Tensor]) -> float:
    """max over tensors of max |Δg| / max |g|; NaN where any value is not finite or the two sides
    have different gradients, so that it never reads as agreement."""
    if len(device_grads) != len(cpu_grads):
        return math.nan
    diffs = [float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) for a, b in zip(device_grads, cpu_grads)]
    return max(diffs) if all(math.isfinite(d) for d in diffs) else math.nan


def agreement_row(loop: str, kind: str, setup: Setup, device, kernel: str = "nn",
                  rotation: str | None = None) -> dict:
    """Relative difference of the loss and of the gradients between `kernel` on `device` and nn
    on the CPU for one loop; `agree` is False for any non-finite value or error."""
    row = {"loop": loop, "kind": kind, "rotation": rotation, "cell": setup.model.cell, "kernel": kernel,
           "size": setup.size}
    since = len(FALLBACKS)
    try:
        cpu_loss, cpu_grads = _loss_and_grads(loop, kind, setup, "cpu", rotation=rotation)
        dev_loss, dev_grads = _loss_and_grads(loop, kind, setup, device, kernel=kernel, rotation=rotation)
    except Exception as err:
        return {**row, "ran": kernel_ran(kernel, since), "agree": False, "error": _error(err)}
    loss_diff = abs(dev_loss - cpu_loss) / max(abs(cpu_loss), 1e-12)
    grad_diff = relative_difference(dev_grads, cpu_grads)
    # TF32 would leave ~1e-3 relative differences (FP32 is pinned); a wrong path leaves O(1)
    agree = math.isfinite(loss_diff) and math.isfinite(grad_diff) and loss_diff < 5e-3 and grad_diff < 5e-2
    return {**row, "ran": kernel_ran(kernel, since), "cpu_loss": cpu_loss, "device_loss": dev_loss,
            "loss_rel_diff": loss_diff, "grad_rel_diff": grad_diff, "agree": agree, "error": None}


# --- no step waits for the GPU -----------------------------------------------------------------

def _step_function(loop: str, kind: str, setup: Setup, device, kernel: str = "nn", rotation: str | None = None):
    """A closure running the next step of the loop's own step function with `kernel`, set up (and
    its batches drawn) as the loop does."""
    model = RepeatRNN(DATA.n_symbols, setup.size, cell=setup.model.cell).to(device)
    model.load_state_dict(setup.model.state_dict())
    if loop == "train":
        rows, update = training_kernel(kernel, model, make_optimizer(model.parameters(), TrainConfig()),
                                       setup.train, device)
        return lambda step: update(rows(np.arange(step * 256, (step + 1) * 256)))
    if loop == "intervention":
        for p in model.parameters():
            p.requires_grad_(False)
        model.train()
        module = make_intervention(kind, DATA.n_symbols, model.state_size, DATA.max_length,
                                   rotation or "matrix_exp").to(device).train()
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
    batches = probe_batches(probe, setup.probe_data.lengths, 256, 0, device)(0, 10**9)

    def step(_):
        _, (idx, plan) = next(batches)
        return probe_step(probe, optimizer, states[idx], tokens[idx], lengths[idx], 1e-3, plan)

    return step


def sync_row(loop: str, kind: str, setup: Setup, device, steps: int = 5, kernel: str = "nn",
             rotation: str | None = None, timed_steps: int = 10) -> dict:
    """The loop's step with `kernel`: two warm-up steps, then `steps` with torch.cuda's sync debug
    mode set to 'error' (any host-device synchronisation inside a step raises), then `timed_steps`
    timed. sync_free: True, False, or None where not applicable (CPU) or unknown (a compiled
    function fell back to eager). `passed` needs no error, no fallback, and no wait unless the row
    is `exempt` (the reason)."""
    cuda = torch.device(device).type == "cuda"
    exempt = sync_exemption(setup.model.cell, loop, kind, kernel, rotation)
    row = {"loop": loop, "kind": kind, "rotation": rotation, "cell": setup.model.cell, "kernel": kernel,
           "size": setup.size, "exempt": exempt}
    since, sync_free, error, speed = len(FALLBACKS), None, None, None
    try:
        step = _step_function(loop, kind, setup, device, kernel, rotation)
        step(0), step(1)
        synchronize(device)
        checked = len(FALLBACKS)
        if cuda:
            torch.cuda.set_sync_debug_mode("error")
        try:
            for i in range(2, 2 + steps):
                step(i)
            sync_free = True if cuda else None
        except RuntimeError as err:
            if not (cuda and "synchroniz" in str(err)):
                raise
            sync_free, error = False, _error(err)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
        if len(FALLBACKS) > checked:  # the compiled step failed under the check and ran eager instead
            sync_free = False if cuda and "synchroniz" in FALLBACKS[checked] else None
        began = time.perf_counter()
        for i in range(2 + steps, 2 + steps + timed_steps):
            step(i)
        synchronize(device)
        speed = timed_steps / max(time.perf_counter() - began, 1e-9)
    except Exception as err:
        error = _error(err)
    ran = kernel_ran(kernel, since)
    if "eager" in ran and error is None:
        error = f"torch.compile fell back to eager: {FALLBACKS[since]}"
    crashed = error is not None and sync_free is not False
    passed = not crashed and "eager" not in ran and (sync_free is not False or exempt is not None)
    return {**row, "ran": ran, "sync_free": sync_free, "error": error, "steps_per_second": speed,
            "passed": passed}


# --- the command -------------------------------------------------------------------------------

def _describe(row: dict) -> str:
    kind = row["kind"] + (f" {row['rotation']}" if row["rotation"] else "") + \
        ("" if row["cell"] == "gru" else f" {row['cell']}")
    return f"N={row['size']} {row['loop']} {kind} ({row['kernel']}"


def _log_agreement(row: dict) -> None:
    ran = "" if row["ran"] in ("nn", "unrolled (compiled)") else f"; ran {row['ran']}"
    if row["error"]:
        log(f"{_describe(row)}{ran}): failed: {row['error']}  <-- DISAGREE")
        return
    log(f"{_describe(row)}{ran}): loss {row['cpu_loss']:.5f} (CPU) vs {row['device_loss']:.5f}; gradients "
        f"differ by {row['grad_rel_diff']:.1e} relative{'' if row['agree'] else '  <-- DISAGREE'}")


def _log_sync(row: dict) -> None:
    if row["sync_free"] is False:
        log(f"{_describe(row)}): a step waits for the GPU: {row['error']}"
            + (f" (exempt: {row['exempt']})" if row["exempt"] else "  <-- FAILS"))
    elif row["error"]:
        log(f"{_describe(row)}): {row['error']}  <-- FAILS")


def run(device: str, sizes: list[int], steps: int, jobs: list[int], concurrency_size: int,
        concurrency_steps: int, startup_seconds: float, out: str | None,
        config_path: str = "config.yaml", checks_only: bool = False, kernels: tuple = ("nn",),
        tf32: bool = False) -> dict:
    """The checks, then (unless `checks_only`) the benchmark and the projection, written to `out`
    as JSON after every row and at the end, whatever happens; returns the result. "passed": every
    loop agrees, every sync row passed, and nothing failed ("errors"). Each of `kernels` is checked
    and timed; the projection uses nn's speeds. FP32 unless `tf32` (reported in "precision")."""
    began = time.perf_counter()
    result = {"device": device, "device_name": None, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "precision": None, "agreement": [], "sync": [], "speeds": [], "concurrency": [], "projection": [],
              "errors": [], "passed": False, "finished": False}

    def save():
        result["seconds"] = time.perf_counter() - began
        if out:
            write_json(out, json_ready(result))

    def attempt(stage: str, work):
        """work(), or None with the error recorded; the JSON saved either way."""
        try:
            return work()
        except Exception as err:
            result["errors"].append({"stage": stage, "error": _error(err),
                                     "traceback": traceback.format_exc()[-4000:]})
            log(f"gpu-check: {stage} failed: {_error(err)}  <-- FAILS")
        finally:
            save()

    def checks(dev) -> None:
        for n, size in enumerate(sizes):
            setups = [make_setup(size)] + ([lstm_setup(make_setup(size))] if n == 0 else [])
            for setup in setups:
                for kernel in kernels:
                    log(f"N={size}: one batch of every {setup.model.cell} {kernel} loop on {dev} and of the "
                        f"nn loop on the CPU, then their steps with the sync check")
                    for loop, kind, rotation in cases(setup, kernel):
                        result["agreement"].append(agreement_row(loop, kind, setup, dev, kernel, rotation))
                        _log_agreement(result["agreement"][-1])
                        save()
                    for loop, kind, rotation in cases(setup, kernel):
                        result["sync"].append(sync_row(loop, kind, setup, dev, kernel=kernel, rotation=rotation))
                        _log_sync(result["sync"][-1])
                        save()
            for kernel in () if checks_only else kernels:
                attempt(f"N={size} {kernel} speeds", lambda: result["speeds"].extend(
                    benchmark.measure_speeds(setups[0], dev, steps, kernel=kernel)))

    def benchmarks(dev) -> None:
        if dev.type == "cuda":
            release_gpu_slots()  # this process's slot: the workers are told which GPU to use
        result["concurrency"] = attempt("concurrency", lambda: benchmark.measure_concurrency(
            concurrency_size, concurrency_steps, str(dev), jobs, startup_seconds,
            ("--tf32",) if tf32 else ())) or []
        settings = {f"{k} jobs on this {'GPU' if dev.type == 'cuda' else 'machine'}": (k, k) for k in jobs}
        if dev.type == "cpu":
            settings[f"16 nodes x {os.cpu_count()} cores like this one"] = (16 * os.cpu_count(), max(jobs))
        if os.path.exists(config_path):
            nn_speeds = [row for row in result["speeds"] if row["kernel"] == "nn"]
            result["projection"] = attempt("projection", lambda: benchmark.project(
                nn_speeds, result["concurrency"], settings, config_path)) or []

    def everything() -> None:
        set_float32_precision(tf32)
        dev = resolve_device(device)
        result.update(device=str(dev), precision=precision_settings(),
                      device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu")
        save()
        checks(dev)
        if not checks_only:
            benchmarks(dev)
        result["finished"] = True

    try:
        attempt("run", everything)
    finally:  # a KeyboardInterrupt too leaves the JSON of what was measured
        result["passed"] = result["finished"] and not result["errors"] and \
            all(r["agree"] for r in result["agreement"]) and all(r["passed"] for r in result["sync"])
        save()
    return result


def run_gpu_check(device: str, out: str, config_path: str = "config.yaml", checks_only: bool = False,
                  tf32: bool = False, **settings) -> dict:
    """The gpu-check command: `settings` left None take the CUDA defaults on a GPU, the scaled-down
    CPU ones otherwise; logs every row as it is measured."""
    defaults = CUDA_DEFAULTS if torch.cuda.is_available() and device != "cpu" else CPU_DEFAULTS
    settings = {k: defaults[k] if settings.get(k) is None else settings[k] for k in defaults}
    result = run(device, out=out, config_path=config_path, checks_only=checks_only, tf32=tf32, **settings)
    log(f"gpu-check {'passed' if result['passed'] else 'FAILED'} on {result['device_name'] or result['device']} in "
        f"{result['seconds']:.0f} s; results in {out}")
    return result
