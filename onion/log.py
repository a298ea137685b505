"""Progress lines in a job's log. Torch-free (the report uses it too)."""

from __future__ import annotations

import sys
import time


def log(message: str) -> None:
    """One timestamped, flushed progress line on stderr (the job's log)."""
    print(time.strftime("%H:%M:%S"), message, file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"
