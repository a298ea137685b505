"""Device and thread choices, the same code path on CPU and CUDA."""

from __future__ import annotations

import math
import time

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu'/'cuda' force one (cuda must exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}; expected auto, cpu or cuda")
    return torch.device(name)


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
    """Periodic 'step, loss, speed, ETA' lines for a loop of `total` steps. A non-finite loss
    stops the loop with NonFiniteError naming the step and `cause`, the likely reason."""

    def __init__(self, total: int, start: int = 0, every: int = 500, label: str = "step",
                 cause: str = "the learning rate may be too high"):
        self.total, self.every, self.label, self.cause = total, every, label, cause
        self.last_step, self.last_time = start, time.perf_counter()
        self.losses: list[float] = []

    def update(self, step: int, loss: float, extra: str = "") -> None:
        """Call after finishing `step` (1-based count of steps done)."""
        if not math.isfinite(loss):
            raise NonFiniteError(f"{self.label} {step}/{self.total}: the loss is {loss}; {self.cause}")
        self.losses.append(loss)
        if step % self.every and step != self.total:
            return
        now = time.perf_counter()
        speed = (step - self.last_step) / max(now - self.last_time, 1e-9)
        eta = (self.total - step) / max(speed, 1e-9)
        mean_loss = sum(self.losses) / len(self.losses)
        log(f"{self.label} {step}/{self.total} loss {mean_loss:.4f} | {speed:.1f} steps/s | "
            f"ETA {format_duration(eta)}{' | ' + extra if extra else ''}")
        self.last_step, self.last_time, self.losses = step, now, []


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
