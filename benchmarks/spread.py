"""How a distributed run's work spread over the worker processes.

`StepRecord.worker` is `host:pid:thread` (the thread is the Dramatiq worker thread
that ran the step), so the process is `host:pid`. The peers' work functions return
their process id instead (`benchmarks.work`), and every system's work functions say how
many calls their process was running when they started.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from typing import Any

from executor import ExecutionResult, StepRecord


def process_of(worker: str | None) -> str:
    """`host:pid` of a record's worker (`?` when it records none)."""
    if not worker:
        return "?"
    return ":".join(worker.split(":")[:2])


def records(result: ExecutionResult, steps: Iterable[str] | None = None) -> list[StepRecord]:
    """The records of `steps` (default every step), a map step's items in its place."""
    ids = list(result.steps) if steps is None else list(steps)
    out: list[StepRecord] = []
    for sid in ids:
        rec = result.steps[sid]
        out.extend(rec.items if rec.items else [rec])
    return out


def counts(owners: Iterable[object], processes: int) -> list[int]:
    """Steps per process, busiest first, padded with zeros to `processes` entries (a
    process that ran nothing is the point of the figure, so it is shown)."""
    c = sorted(Counter(owners).values(), reverse=True)
    return c + [0] * max(0, processes - len(c))


def fmt(c: list[int]) -> str:
    """`4+4` for a few steps, `52/48 %` for many."""
    total = sum(c)
    if total <= 24:
        return "+".join(str(x) for x in c)
    return "/".join(f"{100 * x / total:.0f}" for x in c) + " %"


def fmt_runs(runs: list[list[int]]) -> str:
    """Each measured run's split, in run order (`8+0 8+0 5+3`), once if all equal."""
    shown = [fmt(c) for c in runs]
    return shown[0] if len(set(shown)) == 1 else " ".join(shown)


def busiest_share(c: list[int]) -> float:
    return max(c) / (sum(c) or 1)


class Measured:
    """Wall seconds of each measured run and the steps each process ran in it."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.walls: list[float] = []
        self.counts: list[list[int]] = []
        self.peak = 0  # most work calls one process ran at once, as the work counted them
        self.cpu_work = 0.0  # the CPU fan-out's baseline around this system's runs (s)

    def add(self, wall: float, owners: list[Any], in_flight: list[int] | None = None) -> None:
        """One run: its wall, the process of each step, and (if the work counted it) how
        many steps its process was running when each started."""
        self.walls.append(wall)
        self.counts.append(counts(owners, self.processes))
        self.peak = max([self.peak, *(in_flight or [])])

    def add_outputs(self, wall: float, outputs: list[list[int]]) -> None:
        """One run of `benchmarks.work` functions: their `[pid, in_flight]` outputs."""
        self.add(wall, [o[0] for o in outputs], [o[1] for o in outputs])

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def shares(self) -> str:
        return fmt_runs(self.counts)

    @property
    def shares_peak(self) -> str:
        """`8+0; ≤ 8 at once`: the split, and the most one process ran at once."""
        return f"{self.shares}; ≤ {self.peak} at once" if self.peak else self.shares

    @property
    def busiest(self) -> float:
        """The busiest process's share of the steps, in the median of the runs."""
        return statistics.median(busiest_share(c) for c in self.counts)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"wall_s": self.wall, "walls_s": self.walls}
        d["per_process"] = self.counts
        if self.peak:
            d["peak_in_flight_per_process"] = self.peak
        if self.cpu_work:
            d["cpu_work_s"] = self.cpu_work
        return d
