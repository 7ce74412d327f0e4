"""The work every system in the bench runs: plain functions, the same bytecode everywhere.

dagrelay's tools (`benchmarks.tools`), the Celery tasks (`benchmarks.peer_celery`), the
raw Dramatiq actors (`benchmarks.raw_dramatiq`) and the Dask tasks all call these, so a
ratio between two systems compares the systems, not the work.

Each returns `[pid, in_flight]`: the process it ran in, and how many calls of these
functions that process was running when this one started (itself included). The bench
counts the share of steps each process ran from the first (dagrelay's records also say
it, in `StepRecord.worker`) and the most calls a process ran at once from the second:
counted by the work itself, not inferred from timestamps.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_running = 0


@contextmanager
def counted() -> Iterator[list[int]]:
    """`[pid, calls running in this process now]` for the duration of one call."""
    global _running
    with _lock:
        _running += 1
        now = _running
    try:
        yield [os.getpid(), now]
    finally:
        with _lock:
            _running -= 1


def burn(n: int, after: Any = None) -> list[int]:
    """Pure-Python CPU work holding the GIL: `n` loop turns (see `calibrate`)."""
    with counted() as out:
        x = 0
        for i in range(n):
            x += i * i
    return out


def sleep_sync(seconds: float, after: Any = None) -> list[int]:
    """A blocking sleep: a thread's worth of I/O."""
    with counted() as out:
        time.sleep(seconds)
    return out


async def sleep_async(seconds: float, after: Any = None) -> list[int]:
    """A sleep on the event loop: I/O that holds no thread."""
    with counted() as out:
        await asyncio.sleep(seconds)
    return out


def noop(x: Any = None) -> int:
    return 0


def calibrate(seconds: float) -> int:
    """Loop turns of `burn` that take about `seconds` of CPU on this machine, now."""
    n = 200_000
    while True:
        t0 = time.thread_time()
        burn(n)
        took = time.thread_time() - t0
        if took > 0.05:
            return max(1, round(n * seconds / took))
        n *= 4
