"""Runs cases on the backends and checks them against the reference and each other.

Backends (each reused across cases; `close()` stops what it started):
* `embedded`: `FlowExecutor(registry=tools.registry)` in this process;
* `distributed-threads` / `distributed-async`: a real `redis-server` on a free port
  (`tests.support.servers.RedisServer`) and two `dagrelay worker --tools
  tests.differential.tools` processes (`WorkerProcess`, 1 process x 8 threads each),
  the second mode with `DAGRELAY_ASYNC_STEPS=100` (`--async-steps`).

Attempt counters live in Redis for every backend (`DAGRELAY_FUZZ_COUNTER_URL`, set in
this process for the embedded backend and in the workers' environment): the embedded
backend uses the first Redis it is given, or counts in-process when there is none.
"""

from __future__ import annotations

import os
import time
import traceback
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from executor import ExecutionResult, FlowExecutor

from . import tools
from .checks import Report, check_against, check_result
from .generator import Case, generate, pinned_cases
from .reference import Expectation, Timing, expect

BACKENDS = ("embedded", "distributed-threads", "distributed-async")
#: No single run may take longer (a hang is a failure, not a stuck suite).
RUN_LIMIT = float(os.environ.get("DAGRELAY_FUZZ_RUN_LIMIT", "60"))
TOOLS = "tests.differential.tools"


class HungRun(Exception):
    """A run did not end within RUN_LIMIT seconds."""


class Backend:
    name = "?"
    executor: FlowExecutor

    def run(self, case: Case) -> tuple[ExecutionResult, float]:
        """Run the case once (a fresh nonce: fresh attempt counters); result and wall."""
        inputs = {**case.inputs, "nonce": uuid.uuid4().hex}
        t0 = time.monotonic()
        handle = self.executor.submit(case.flow, inputs)
        if case.cancel_after is not None:
            left = case.cancel_after - (time.monotonic() - t0)
            if left > 0:
                time.sleep(left)
            handle.cancel()
        try:
            result = handle.wait(timeout=RUN_LIMIT)
        except TimeoutError as exc:
            # A hang is a finding: say which steps never ended, then stop the run.
            try:
                now = handle.result()
                stuck = {
                    sid: rec.status
                    for sid, rec in now.steps.items()
                    if rec.status in ("pending", "queued", "running")
                }
                detail = f"run {now.status}; steps not ended: {stuck}"
            except Exception as why:
                detail = f"(no partial result: {why})"
            detail += self.diagnose()
            handle.cancel()
            raise HungRun(f"{exc}; {detail}") from None
        return result, time.monotonic() - t0

    def diagnose(self) -> str:
        """What else to say about a hung run (the distributed backend: its queues)."""
        return ""

    def new_errors(self) -> list[str]:
        """Errors the backend logged since the last call (the workers' ERROR lines)."""
        return []

    def close(self) -> None:
        self.executor.close()


class Embedded(Backend):
    name = "embedded"

    def __init__(self, counter_url: str | None = None) -> None:
        self._saved = os.environ.get(tools.COUNTER_URL_ENV)
        if counter_url:
            os.environ[tools.COUNTER_URL_ENV] = counter_url
        self.executor = FlowExecutor(registry=tools.registry)

    def close(self) -> None:
        super().close()
        if self._saved is None:
            os.environ.pop(tools.COUNTER_URL_ENV, None)
        else:
            os.environ[tools.COUNTER_URL_ENV] = self._saved


class Distributed(Backend):
    """A redis-server and two worker processes."""

    def __init__(self, async_steps: bool, workers: int = 2, threads: int = 8) -> None:
        from tests.support.servers import RedisServer, WorkerProcess

        self.name = "distributed-async" if async_steps else "distributed-threads"
        self.server = RedisServer().start()
        env = {tools.COUNTER_URL_ENV: self.server.url}
        if async_steps:
            env["DAGRELAY_ASYNC_STEPS"] = "100"
        self.workers: list[Any] = []
        try:
            for _ in range(workers):
                self.workers.append(
                    WorkerProcess(self.server.url, TOOLS, processes=1, threads=threads, env=env)
                )
            for w in self.workers:
                w.wait_ready()
        except BaseException:
            self._stop()
            raise
        self.executor = FlowExecutor(self.server.url, registry=tools.registry)
        self._seen = [0 for _ in self.workers]

    def new_errors(self) -> list[str]:
        """Each ERROR/CRITICAL line the workers logged since the last call, with the
        exception that ended its traceback."""
        found = []
        for i, w in enumerate(self.workers):
            text = w.log()
            lines = text[self._seen[i] :].splitlines()
            self._seen[i] = len(text)
            for n, line in enumerate(lines):
                if "[ERROR]" in line or "[CRITICAL]" in line:
                    exc = next(
                        (
                            x
                            for x in lines[n + 1 : n + 60]
                            if x and not x.startswith((" ", "Traceback", "["))
                        ),
                        "",
                    )
                    found.append(f"worker {i}: {line[line.find('[ERROR]') :][:200]} {exc}")
        return found

    @property
    def url(self) -> str:
        return str(self.server.url)

    def diagnose(self) -> str:
        """The broker's keys and their sizes, and whether the workers are alive: enough to
        tell a message lost from one never fetched (Dramatiq's own key names, `dramatiq:*`)."""
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            sizes = {}
            for key in client.scan_iter(match="dramatiq*", count=1000):
                kind = client.type(key).decode()
                size = {
                    "list": client.llen,
                    "hash": client.hlen,
                    "zset": client.zcard,
                    "set": client.scard,
                }.get(kind)
                sizes[key.decode()] = f"{kind}:{size(key) if size else '?'}"
        finally:
            client.close()
        alive = [w.proc.poll() is None for w in self.workers]
        return f"; broker keys {sizes}; workers alive {alive}{self._worker_errors()}"

    def _worker_errors(self, keep: int = 60) -> str:
        """The end of the last traceback or error line each worker logged, if any
        (a dead-lettered message leaves its run waiting forever: this says why)."""
        out = []
        for i, w in enumerate(self.workers):
            lines = w.log().splitlines()
            marks = [
                n
                for n, line in enumerate(lines)
                if "Traceback" in line or " ERROR " in line or "CRITICAL" in line
            ]
            if marks:
                start = max(0, marks[-1] - 5)
                out.append(f"\n--- worker {i} log ---\n" + "\n".join(lines[start : start + keep]))
        return "".join(out)

    def _stop(self) -> None:
        for w in self.workers:
            try:
                w.stop()
            except Exception:
                w.kill_all()
        self.server.close()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._stop()


def make_backend(name: str, counter_url: str | None = None) -> Backend:
    if name == "embedded":
        return Embedded(counter_url)
    if name == "distributed-threads":
        return Distributed(async_steps=False)
    if name == "distributed-async":
        return Distributed(async_steps=True)
    raise ValueError(f"unknown backend {name!r}; one of {BACKENDS}")


# Cases ----------------------------------------------------------------------------------
#: The fixed list `make test` runs: hand-written cases plus these seeds.
FIXED_SEEDS = tuple(range(1, 51))


def selected_cases() -> list[Case]:
    """The cases to run: `DAGRELAY_FUZZ_SEED=1,2` / `DAGRELAY_FUZZ_CASE=name` replay
    those; `DAGRELAY_FUZZ_COUNT=N` runs seeds 1..N; else the fixed list."""
    seeds = os.environ.get("DAGRELAY_FUZZ_SEED")
    names = os.environ.get("DAGRELAY_FUZZ_CASE")
    if seeds or names:
        out = [generate(int(s)) for s in (seeds or "").split(",") if s.strip()]
        pinned = {c.name: c for c in pinned_cases()}
        for n in (names or "").split(","):
            if n.strip():
                if n.strip() not in pinned:
                    raise KeyError(f"no case {n!r}: {sorted(pinned)}")
                out.append(pinned[n.strip()])
        return out
    count = os.environ.get("DAGRELAY_FUZZ_COUNT")
    seeds_list: Iterable[int] = range(1, int(count) + 1) if count else FIXED_SEEDS
    return [*pinned_cases(), *(generate(s) for s in seeds_list)]


def replaying() -> bool:
    return bool(os.environ.get("DAGRELAY_FUZZ_SEED") or os.environ.get("DAGRELAY_FUZZ_CASE"))


def timing() -> Timing:
    return Timing(scale=float(os.environ.get("DAGRELAY_FUZZ_SLACK", "1")))


# Running and checking ---------------------------------------------------------------------
@dataclass
class CaseRun:
    case: Case
    expectation: Expectation
    results: dict[str, ExecutionResult] = field(default_factory=dict)
    reports: dict[str, Report] = field(default_factory=dict)


def run_case(case: Case, backends: dict[str, Backend], t: Timing | None = None) -> CaseRun:
    """The reference, then every backend, then every check."""
    # The nonce only separates attempt counters; the reference needs it to resolve.
    exp = expect(case.flow, {**case.inputs, "nonce": "-"}, case.cancel_after, t or timing())
    cr = CaseRun(case, exp)
    for name, backend in backends.items():
        report = Report(case, name)
        cr.reports[name] = report
        try:
            result, wall = backend.run(case)
        except HungRun as exc:
            report.add("every_run_ends", None, str(exc))
            continue
        except Exception as exc:
            report.crashed = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            report.add("run_status", None, f"the run raised {type(exc).__name__}: {exc}")
            continue
        finally:
            for line in backend.new_errors():
                report.add("workers_log_no_errors", None, line)
        report.wall = wall
        cr.results[name] = result
        check_result(case, exp, result, report)
    base = cr.results.get("embedded")
    if base is not None:
        for name, result in cr.results.items():
            if name != "embedded":
                check_against(case, base, result, cr.reports[name])
    return cr


def run_all(cases: Iterable[Case], backends: dict[str, Backend]) -> Iterator[CaseRun]:
    t = timing()
    for case in cases:
        yield run_case(case, backends, t)


# Explaining a failure ---------------------------------------------------------------------
def explain(cr: CaseRun, backend: str, checks: Iterable[str] | None = None) -> str:
    """A readable account of one case's violations on one backend, with its replay."""
    report = cr.reports[backend]
    wanted = set(checks) if checks is not None else set(report.violations)
    lines = [
        f"{cr.case.describe()}  [{backend}, {report.wall:.2f}s]",
        f"  replay: {cr.case.replay()} .venv/bin/python -m pytest tests/differential -q"
        f"  (or: python -m tests.differential --seed/--case ... --backend ...)",
    ]
    if cr.case.note:
        lines.append(f"  {cr.case.note}")
    for check, vs in sorted(report.violations.items()):
        if check not in wanted:
            continue
        for v in vs[:8]:
            lines.append(f"  {v}")
        if len(vs) > 8:
            lines.append(f"  ... {len(vs) - 8} more {check}")
    if report.crashed:
        lines.append("  " + report.crashed.replace("\n", "\n  "))
    return "\n".join(lines)


def dump(cr: CaseRun, backend: str) -> str:
    """Everything about one run: the flow, the expectation and the result, step by step."""
    from .checks import _fmt, outcome_of

    out = [cr.case.describe(), cr.case.flow.to_yaml(), f"input: {cr.case.inputs}"]
    exp = cr.expectation
    out.append(f"reference: run {sorted(exp.run_status)} stops {sorted(exp.stop_kinds)}")
    res = cr.results.get(backend)
    if res is not None:
        out.append(f"{backend}: run {res.status} error {res.error!r} wall {res.wall_time}")
    for sid, e in exp.steps.items():
        line = f"  {sid}: allowed {_fmt(e.outcomes)}"
        if e.cleanup:
            line += " (cleanup)"
        if res is not None and sid in res.steps:
            rec = res.steps[sid]
            line += f"\n      got {_fmt({outcome_of(rec, e.is_map)})}"
            if rec.attempts:
                line += " attempts " + ", ".join(
                    f"{a.number}:{a.error.type if a.error else 'ok'}" for a in rec.attempts
                )
            if rec.started_at and res.submitted_at:
                line += f" start +{(rec.started_at - res.submitted_at).total_seconds():.3f}"
            if rec.finished_at and res.submitted_at:
                line += f" end +{(rec.finished_at - res.submitted_at).total_seconds():.3f}"
        out.append(line)
    return "\n".join(out)
