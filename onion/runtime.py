"""Device and thread choices, the same code path on CPU and CUDA."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from onion.log import log
from onion.names import DEVICES


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu', 'cuda' or 'cuda:N' force one (the GPU must
    exist: N is checked against the visible devices). Sets the process's float32 precision: FP32
    unless set_float32_precision(tf32=True) chose TF32 (gpu-check --tf32).

    Plain 'cuda' (no index) shares the visible GPUs between concurrent jobs: see claim_gpu.
    """
    set_float32_precision()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and name != "cuda" and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; expected one of {DEVICES} or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    if name == "cuda":
        slot, index = claim_gpu(torch.cuda.device_count())
        torch.cuda.set_device(index)
        log(f"GPU slot {slot}: using visible GPU {index} of {torch.cuda.device_count()} "
            f"({torch.cuda.get_device_name(index)})")
        return torch.device("cuda", index)
    if name.startswith("cuda:"):
        index, count = name[5:], torch.cuda.device_count()
        if not index.isdigit() or int(index) >= count:
            raise ValueError(f"device {name!r}: no such GPU; {count} visible "
                             f"(cuda:0 to cuda:{count - 1}; CUDA_VISIBLE_DEVICES renumbers them)")
        torch.cuda.set_device(int(index))
        return torch.device("cuda", int(index))
    return torch.device(name)


_chosen = {"tf32": False}  # this process's float32 precision (set_float32_precision)


def set_float32_precision(tf32: bool | None = None) -> dict:
    """FP32 matrix products everywhere (the default: what the CPU computes), or TensorFloat-32 in
    cuBLAS and cuDNN (tf32=True, an explicit choice; Ampere and later GPUs); None: the process's
    last choice. PyTorch's own default lets cuDNN's GRU and LSTM use TF32. Returns
    precision_settings()."""
    if tf32 is not None:
        _chosen["tf32"] = tf32
    tf32 = _chosen["tf32"]
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return precision_settings()


def precision_settings() -> dict:
    """The float32 precision flags now in force (gpu-check reports them)."""
    return {"tf32": torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32,
            "torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "torch.backends.cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def upload(tensor: torch.Tensor, device) -> torch.Tensor:
    """A tensor copied to `device` without waiting for it: a host tensor goes through pinned memory
    where the copy goes to a GPU (an upload from pageable memory may block); unchanged on the CPU."""
    if tensor.device.type == "cpu" and torch.device(device).type == "cuda" and torch.cuda.is_available():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


FALLBACKS: list[str] = []  # every compiled function that fell back to eager in this process


def note_fallback(what: str) -> None:
    """Record that a compiled function now runs eager (onion.model.unrolled.compiled)."""
    FALLBACKS.append(what)


def kernel_ran(kernel: str, since: int) -> str:
    """Which kernel ran for work started when len(FALLBACKS) was `since`: `kernel`, or for
    "unrolled" whether every compiled function stayed compiled (gpu-check reports it)."""
    if kernel == "nn":
        return "nn"
    fell = FALLBACKS[since:]
    return f"{kernel} (compiled)" if not fell else f"{kernel} (eager after a torch.compile failure: {fell[0]})"


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
    once is the scheduler's choice (Snakemake: --resources gpu_slots=k, docs/cluster.md).
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


def machine(device) -> dict:
    """What computed a result, for telling runs apart: runs of the same code and settings can round
    floats differently on other CPUs (the instruction set picks the kernels) or GPUs."""
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    info = {"torch": torch.__version__, "cpu": cpu or platform.processor() or platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def synchronize(device) -> None:
    """Wait for queued GPU work (before reading a clock); nothing on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def set_threads(threads: int | None) -> None:
    """Pin PyTorch's intra-op threads (one per job when jobs share the cores)."""
    if threads:
        torch.set_num_threads(threads)


class NonFiniteError(RuntimeError):
    """A loss, a parameter or a stored state is NaN or infinite: the job stops, writing nothing."""


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
