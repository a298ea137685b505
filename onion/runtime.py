"""Device and thread choices, the same code path on CPU and CUDA."""

from __future__ import annotations

import math
import time

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu'/'cuda' force one (cuda must exist).

    Plain 'cuda' (no index) shares the visible GPUs between concurrent jobs: see claim_gpu.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}; expected auto, cpu or cuda")
    if name == "cuda":
        slot, index = claim_gpu(torch.cuda.device_count())
        torch.cuda.set_device(index)
        log(f"GPU slot {slot}: using visible GPU {index} of {torch.cuda.device_count()} "
            f"({torch.cuda.get_device_name(index)})")
        return torch.device("cuda", index)
    return torch.device(name)


_claimed_slots: list = []  # open lock files: a slot is held until this process exits


def gpu_slot_dir():
    """Where the slot locks live: node-local, one set per user and per SLURM allocation (whose
    visible GPUs are its own); ONION_GPU_SLOT_DIR overrides."""
    import os
    import tempfile
    from pathlib import Path
    if os.environ.get("ONION_GPU_SLOT_DIR"):
        return Path(os.environ["ONION_GPU_SLOT_DIR"])
    name = f"onion-gpu-slots-{os.getuid()}"
    if os.environ.get("SLURM_JOB_ID"):
        name += f"-slurm{os.environ['SLURM_JOB_ID']}"
    return Path(tempfile.gettempdir()) / name


def claim_gpu(n_gpus: int, directory=None) -> tuple[int, int]:
    """Take the lowest free slot 0, 1, 2, ... (an exclusive lock on a file, released by the kernel
    when the process ends, however it ends) and return (slot, GPU index = slot mod n_gpus).

    So k concurrent jobs spread over the GPUs round-robin, k / n_gpus to a GPU; how many run at
    once is the scheduler's choice (Snakemake: --resources gpu=k).
    """
    import fcntl
    import os
    from pathlib import Path
    directory = Path(directory or gpu_slot_dir())
    directory.mkdir(parents=True, exist_ok=True)
    slot = 0
    while True:
        fd = os.open(directory / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            slot += 1
            continue
        _claimed_slots.append(fd)
        return slot, slot % max(n_gpus, 1)


def release_gpu_slots() -> None:
    """Give back every slot this process holds (tests; a job simply exits)."""
    import os
    while _claimed_slots:
        os.close(_claimed_slots.pop())


def synchronize(device) -> None:
    """Wait for queued GPU work (before reading a clock); nothing on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def set_threads(threads: int | None) -> None:
    """Pin PyTorch's intra-op threads (one per job when jobs share the cores)."""
    if threads:
        torch.set_num_threads(threads)


def log(message: str) -> None:
    """One timestamped, flushed progress line on stderr (the job's log)."""
    import sys
    print(time.strftime("%H:%M:%S"), message, file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


class NonFiniteError(RuntimeError):
    """A loss, a parameter or a stored state is NaN or infinite: the job stops, writing nothing."""


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


def fingerprint(*arrays) -> str:
    """A content hash of arrays or tensors already in memory (no second read of any file)."""
    import hashlib

    import numpy as np
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu().numpy()
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


def module_fingerprint(module: torch.nn.Module) -> str:
    """A content hash of a module's weights and buffers."""
    return fingerprint(*module.state_dict().values())


def save_checkpoint(path, state: dict) -> None:
    """Write a training checkpoint atomically (a killed write never looks complete)."""
    from pathlib import Path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def resume(path, identity: dict, device, module, optimizer, key: str, total: int) -> dict | None:
    """Restore `module` (saved under `key`) and `optimizer` from a matching checkpoint at `path`.

    Returns the checkpoint (its "step" is where to continue), or None to start from step 0.
    """
    state = load_checkpoint(path, identity, device) if path else None
    if state is not None:
        module.load_state_dict(state[key])
        optimizer.load_state_dict(state["optimizer"])
        log(f"resuming from checkpoint {path} at step {state['step']}/{total}")
    return state


def load_checkpoint(path, identity: dict, device) -> dict | None:
    """The checkpoint at `path` if it exists and was made for the same `identity`, else None."""
    from pathlib import Path
    if not Path(path).exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:
        log(f"ignoring unreadable checkpoint {path}: {err}")
        return None
    saved = state.get("identity") or {}
    if saved != identity:
        differ = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
        log(f"starting over: checkpoint {path} was made from other inputs or settings "
            f"({', '.join(differ)} differ)")
        return None
    return state
