"""The one resumable optimisation loop that trains models, interventions and probes.

A caller says how a batch is drawn and what a step computes (`update`); the loop resumes from a
checkpoint made for the same `identity`, logs progress, stops on a non-finite loss, checkpoints
every `checkpoint_every` steps and at the last step, and returns the training record.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterable

import torch

from onion.config import OptimConfig
from onion.files import save_torch
from onion.log import format_duration, log
from onion.runtime import NonFiniteError, machine, synchronize

# The training record's keys that say how a run went, not what it computed: a resumed run differs
# from an uninterrupted one in these and in nothing else (tests/test_kill_campaign.py compares the
# rest).
BOOKKEEPING = ("resumed_from", "steps_this_run", "seconds_this_run", "steps_per_second", "first_step_seconds")


class Progress:
    """Periodic 'step, loss, speed, ETA' lines for a loop of `total` steps.

    Losses are summed on their device and read back only at log steps and at `check()`, so the loop
    never waits for the GPU in between. A non-finite loss stops the loop with NonFiniteError naming
    the steps and `cause`, the likely reason.
    """

    def __init__(self, total: int, start: int = 0, every: int = 500, label: str = "step",
                 cause: str = "the learning rate may be too high"):
        self.total, self.every, self.label, self.cause = total, every, label, cause
        self.last_step, self.last_time = start, time.perf_counter()
        self.checked_step = start  # losses of steps after this one are not yet checked
        self.loss_sum, self.count, self.pending = None, 0, None  # window since the last log line

    def update(self, step: int, loss, extra: str = "") -> None:
        """Call after finishing `step` (1-based count of steps done) with its loss (a tensor or a
        float); logs, and checks the losses, every `every` steps and at the last step."""
        loss = loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.pending = self.loss_sum
        self.count += 1
        if step % self.every and step != self.total:
            return
        mean_loss = self.check(step)
        now = time.perf_counter()
        speed = (step - self.last_step) / max(now - self.last_time, 1e-9)
        eta = (self.total - step) / max(speed, 1e-9)
        log(f"{self.label} {step}/{self.total} loss {mean_loss:.4f} | {speed:.1f} steps/s | "
            f"ETA {format_duration(eta)}{' | ' + extra if extra else ''}")
        self.last_step, self.last_time, self.loss_sum, self.count = step, now, None, 0

    def check(self, step: int) -> float:
        """Read the losses back (one host-device synchronisation); raise NonFiniteError if any
        since the last check is NaN or infinite. Call before saving a checkpoint.
        Returns the mean loss of the current window."""
        if self.pending is None:
            return float("nan")
        total = float(self.pending)
        if not math.isfinite(total):
            steps = f"{step}" if step - self.checked_step <= 1 else f"{self.checked_step + 1}-{step}"
            raise NonFiniteError(f"{self.label} {steps}/{self.total}: the loss is {total}; {self.cause}")
        self.checked_step, self.pending = step, None
        return total / max(self.count, 1)


def apply_update(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
    """One optimiser step on `loss` (gradients zeroed first); returns the loss, still on its device,
    so that no step waits for the GPU (Progress reads losses back at log steps only)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def load_checkpoint(path, identity: dict) -> dict | None:
    """The checkpoint at `path` if it exists and was made for the same `identity`, else None
    (and a log line that names what differs). Loaded on the CPU: load_state_dict moves module
    and optimiser state to their parameters' devices, except a non-fused AdamW's `step` counters,
    which stay on the CPU as in a fresh optimiser (on a GPU, Adam would read them back each step).
    A checkpoint from before `device type` was recorded was made on a CPU."""
    if not path or not Path(path).exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        log(f"ignoring unreadable checkpoint {path}: {err}")
        return None
    saved = state.get("identity") or {}
    saved = {"device type": "cpu", **saved} if saved else saved
    if saved != identity:
        differ = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
        log(f"starting over: checkpoint {path} was made from other inputs or settings "
            f"({', '.join(differ)} differ)")
        return None
    return state


def optimise(module: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: OptimConfig,
             update: Callable[[int, object], torch.Tensor],
             batches: Callable[[int, int], Iterable[tuple[int, object]]], *, key: str,
             identity: dict, device, label: str, cause: str, checkpoint_path=None,
             stop_after: int | None = None, after_step: Callable[[int], str] | None = None,
             extra_state: dict | None = None) -> dict:
    """Run steps start..cfg.steps-1 of `update(step, batch) -> loss` (on the device) over
    `batches(start, end)`, which yields (step, batch).

    Resumes `module` (checkpointed under `key`), `optimizer` and the JSON-like values of
    `extra_state` (updated in place) from `checkpoint_path` when it was made for `identity` on the
    same device type (cpu or cuda). A checkpoint keeps the loss of its step too, so that a run
    resumed at the last step reports the final loss an uninterrupted one does.
    `after_step(done)` may evaluate and returns text for the log line. `stop_after` ends the loop
    after that many steps in total, as if the job were killed (tests of resumption). Returns the
    training record: steps, resumed_from, steps_this_run, seconds_this_run, steps_per_second,
    first_step_seconds (the first step's time, compilation included where a step is compiled),
    final_loss, finished.
    """
    extra_state = {} if extra_state is None else extra_state
    # random draws made on the device differ between device types: never resume across them
    identity = {**identity, "device type": torch.device(device).type}
    state = load_checkpoint(checkpoint_path, identity)
    start, saved_loss = 0, None
    if state is not None:
        module.load_state_dict(state[key])
        optimizer.load_state_dict(state["optimizer"])
        extra_state.update({name: state[name] for name in extra_state})
        start, saved_loss = state["step"], state.get("loss")
        log(f"resuming from checkpoint {checkpoint_path} at step {start}/{cfg.steps}")
    progress = Progress(cfg.steps, start=start, every=cfg.log_every, label=label, cause=cause)
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    began, loss, first_step_seconds = time.perf_counter(), None, None
    for step, batch in batches(start, end):
        loss = update(step, batch)
        done = step + 1
        if first_step_seconds is None:
            synchronize(device)
            first_step_seconds = time.perf_counter() - began
            log(f"first {label}: {first_step_seconds:.1f} s (compilation included, where compiled)")
        progress.update(done, loss, after_step(done) if after_step else "")
        # the last step is checkpointed too: a group job retried whole (profiles/slurm) then
        # finishes this analysis at once instead of starting it over
        if checkpoint_path and ((cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
                                or done == cfg.steps):
            progress.check(done)  # never checkpoint a diverged run
            save_torch({"identity": identity, "step": done, "loss": float(loss), key: module.state_dict(),
                        "optimizer": optimizer.state_dict(), **extra_state}, checkpoint_path)
    synchronize(device)  # the clock counts the queued GPU work too
    seconds = time.perf_counter() - began
    return {"steps": cfg.steps, "resumed_from": start, "steps_this_run": end - start,
            "seconds_this_run": seconds, "steps_per_second": (end - start) / max(seconds, 1e-9),
            "first_step_seconds": first_step_seconds,
            "final_loss": float(loss) if loss is not None else saved_loss, "finished": end == cfg.steps,
            "machine": machine(device)}


def each_step(start: int, end: int) -> Iterable[tuple[int, int]]:
    """`batches` for an update that draws its own batch from the step number: (step, step)."""
    return ((step, step) for step in range(start, end))
