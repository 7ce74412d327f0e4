"""The embedded backend: the scheduling core driven by asyncio tasks in this process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from executor.attempts import call_tool, now, run_attempts, run_map
from executor.dag import Dag
from executor.errors import RunNotFoundError, ToolOutputError
from executor.events import EventLog, RunEvent
from executor.handle import RunHandle
from executor.logs import bind as bind_log_ids
from executor.references import Scope
from executor.result import (
    TERMINAL_RUN,
    TERMINAL_STEP,
    ExecutionResult,
    RunStatus,
    StepError,
    StepRecord,
    StepStatus,
    summarize,
)
from executor.retry import NO_RETRY
from executor.scheduling import Actions, RunState
from executor.tools import Tool, ToolRegistry, check_output_size


class LocalRun:
    """One run on an event loop: starts each step the moment its dependencies are done."""

    def __init__(self, backend: LocalBackend, dag: Dag, inputs: Any, run_id: str) -> None:
        self.backend = backend
        self.dag = dag
        self.flow = dag.flow
        self.inputs = inputs
        self.run_id = run_id
        self.state = RunState(dag, inputs)
        self.records = {
            sid: StepRecord(step_id=sid, tool=step.tool) for sid, step in dag.steps.items()
        }
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.log = EventLog(run_id, backend.worker)
        self.submitted_at = now()
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self._t0 = 0.0
        self.wall_time: float | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._final: ExecutionResult | None = None
        self._run_status: RunStatus = "pending"
        self._cancel_requested = False

    # Running ---------------------------------------------------------------------
    async def execute(self) -> ExecutionResult:
        """Run to the end (or the flow's timeout) and return the result."""
        self.loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        self.started_at = now()
        self._t0 = time.perf_counter()
        self._run_status = "running"
        self._apply(self.state.start())
        if self._cancel_requested:  # cancel() came before the loop picked the run up
            self._stop("cancelled")
        try:
            if not self.state.finished:
                if self.flow.timeout is not None:
                    try:
                        async with asyncio.timeout(self.flow.timeout):
                            await self._done.wait()
                    except TimeoutError:
                        self._stop("timed_out")
                await self._done.wait()
        except asyncio.CancelledError:
            # The caller gave up on the run (e.g. its own task was cancelled): stop ours.
            self._stop("cancelled")
            with contextlib.suppress(asyncio.CancelledError):
                await self._done.wait()
            raise
        finally:
            if self.tasks:
                await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        return self._finish()

    def _finish(self) -> ExecutionResult:
        self.wall_time = time.perf_counter() - self._t0
        self.finished_at = now()
        self._run_status = self.state.run_status()
        result = self.snapshot(final=True)
        # The snapshot may turn `succeeded` into `failed` (the flow output cannot be
        # resolved): the handle's status and the final event must say the same.
        self._run_status = result.status
        summarize(result, self.dag.deps, self.dag.topological_order())
        self._final = result
        self.log.add(None, result.status, self.finished_at, error=result.error)
        self.log.close()
        return result

    def _apply(self, actions: Actions) -> None:
        for sid, status, error in actions.resolved:
            rec = self.records[sid]
            rec.status = status
            rec.error = error
            self._emit(sid, status, error=str(error) if error else None)
            task = self.tasks.get(sid)
            if task is not None:
                # Queued (e.g. waiting for a concurrency slot) when the run stopped: its
                # task must not go on to call the tool.
                task.cancel()
        if actions.run:
            loop = asyncio.get_running_loop()
            for sid in actions.run:
                rec = self.records[sid]
                rec.status = "queued"
                rec.queued_at = queued = now()
                self.tasks[sid] = loop.create_task(self._run_step(sid))
                self._emit(sid, "queued", at=queued)
        for sid in actions.cancel_running:
            task = self.tasks.get(sid)
            if task is not None:
                task.cancel()
        if self.state.finished and self._done is not None:
            self._done.set()

    def _stop(self, reason: Any) -> None:
        if self.state.finished:
            return
        self._apply(self.state.stop(reason))

    def cancel(self) -> None:
        """Cancel from any thread."""
        self._cancel_requested = True
        loop = self.loop
        if loop is None or self.state.finished:
            return
        if _running_loop() is loop:
            self._stop("cancelled")
        else:
            loop.call_soon_threadsafe(self._stop, "cancelled")

    def _emit(
        self,
        sid: str,
        status: str,
        attempt: int | None = None,
        error: str | None = None,
        at: datetime | None = None,
    ) -> None:
        self.log.add(sid, status, at or now(), attempt, error)

    # One step --------------------------------------------------------------------
    async def _run_step(self, sid: str) -> None:
        step = self.dag.steps[sid]
        rec = self.records[sid]
        bind_log_ids(self.run_id, sid)  # this task's own context: its tool's log records
        backend = self.backend
        tool = backend.registry.get(step.tool)
        policy = step.retry or tool.retry or NO_RETRY
        timeout = step.timeout if step.timeout is not None else tool.timeout
        scope = Scope(self.inputs, self.state.outputs)
        status: StepStatus
        output: Any = None

        def started(number: int, _: StepError | None) -> None:
            self.state.mark_running(sid)
            self._emit(sid, "running", number, at=rec.started_at)

        # No limit configured: no slot to take (the common case stays cheap).
        slot = None
        if backend.max_concurrency is not None or tool.max_concurrency is not None:
            slot = lambda: backend.slot(tool)  # noqa: E731

        def retrying(number: int, error: StepError | None) -> None:
            self._emit(sid, "retrying", number, str(error))

        try:
            if step.map is not None:
                status, output = await run_map(
                    rec,
                    step,
                    tool,
                    policy,
                    timeout,
                    scope,
                    self.dag.predicates.get(sid),
                    backend.call,
                    backend.worker,
                    slot=slot,
                    t_queued=time.perf_counter(),
                    on_start=started,
                )
            else:
                status, output = await run_attempts(
                    rec,
                    tool,
                    policy,
                    timeout,
                    step.inputs,
                    scope.resolve,
                    backend.call,
                    backend.worker,
                    slot=slot,
                    t_queued=time.perf_counter(),
                    on_start=started,
                    on_retry=retrying,
                )
        except asyncio.CancelledError:
            status = "cancelled"
            self._end_timing(rec)
        if status == "succeeded" and backend.max_output_bytes is not None:
            try:
                check_output_size(tool.name, json.dumps(output), backend.max_output_bytes)
            except ToolOutputError as too_big:  # as a worker does: the step fails
                status, output = "failed", None
                rec.error = StepError.from_exception(too_big)
                if rec.attempts:
                    rec.attempts[-1].error = rec.error
                for item in rec.items or ():
                    item.output = None
        self.tasks.pop(sid, None)
        if self.state.status[sid] in TERMINAL_STEP:
            # Resolved while queued (the run stopped): already recorded and announced.
            rec.status = self.state.status[sid]
            return
        rec.status = status
        if status == "succeeded":
            rec.output = output
        self._emit(sid, status, len(rec.attempts) or None, str(rec.error) if rec.error else None)
        self._apply(self.state.finish(sid, status, output))

    def _end_timing(self, rec: StepRecord) -> None:
        """Close the timing of a step cancelled while it waited to retry."""
        if rec.started_at is not None:
            rec.finished_at = now()
            rec.duration = (rec.finished_at - rec.started_at).total_seconds()

    # Results ---------------------------------------------------------------------
    def status(self) -> RunStatus:
        return self._run_status

    def snapshot(self, final: bool = False) -> ExecutionResult:
        """The result as it stands (final once the run finished).

        Args:
            final: every task is done, so the records can be handed over uncopied.
        """
        if self._final is not None:
            return self._final
        status = self._run_status
        output = None
        error = None
        if status == "succeeded" and self.flow.output is not None:
            try:
                output = Scope(self.inputs, self.state.outputs).resolve(self.flow.output)
            except Exception as exc:
                status, error = "failed", f"output: {exc}"
        elif status in TERMINAL_RUN and status != "succeeded":
            error = self._error_summary(status)
        # Deep: a live snapshot must not share attempt lists with records still changing.
        steps = (
            dict(self.records)
            if final
            else {sid: rec.model_copy(deep=True) for sid, rec in self.records.items()}
        )
        return ExecutionResult(
            run_id=self.run_id,
            flow_name=self.flow.name,
            flow_version=self.flow.version,
            status=status,
            inputs=self.inputs,
            output=output,
            error=error,
            steps=steps,
            submitted_at=self.submitted_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            wall_time=self.wall_time,
        )

    def _error_summary(self, status: RunStatus) -> str:
        if status == "cancelled":
            return "run cancelled"
        if status == "timed_out":
            return f"run exceeded its timeout of {self.flow.timeout}s"
        for sid, rec in self.records.items():
            if rec.status == "failed":
                return f"step {sid!r} failed: {rec.error}"
        return "run failed"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LocalBackend:
    """Runs flows in this process: async tools on the loop, sync tools in threads."""

    def __init__(
        self,
        registry: ToolRegistry,
        max_concurrency: int | None = None,
        max_threads: int = 32,
        worker: str = "local",
    ) -> None:
        self.registry = registry
        self.max_concurrency = max_concurrency
        self.worker = worker
        self.max_output_bytes: int | None = None  # FlowExecutor(max_output_bytes=...)
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="dagrelay-tool"
        )
        # Semaphores are bound to the loop that first uses them, so keep one set per loop.
        self._limits: dict[int, dict[str | None, asyncio.Semaphore]] = {}
        self._runs: dict[str, LocalRun] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # Limits ---------------------------------------------------------------------
    def slot(self, tool: Tool) -> contextlib.AbstractAsyncContextManager[Any]:
        """Hold the executor-wide and the tool's concurrency slot while a call runs."""
        if self.max_concurrency is None and tool.max_concurrency is None:
            return contextlib.nullcontext()
        # asyncio semaphores belong to one loop; `arun` may use several loops.
        limits = self._limits.setdefault(id(asyncio.get_running_loop()), {})
        sems: list[asyncio.Semaphore] = []
        if self.max_concurrency is not None:
            sems.append(limits.setdefault(None, asyncio.Semaphore(self.max_concurrency)))
        if tool.max_concurrency is not None:
            sems.append(limits.setdefault(tool.name, asyncio.Semaphore(tool.max_concurrency)))
        return _Slots(sems)

    async def call(self, tool: Tool, kwargs: dict[str, Any], timeout: float | None) -> Any:
        """Call a tool (sync ones in this backend's threads) with a timeout."""
        return await call_tool(tool, kwargs, timeout, self._threads)

    # Runs ------------------------------------------------------------------------
    def new_run(self, dag: Dag, inputs: Any, run_id: str) -> LocalRun:
        run = LocalRun(self, dag, inputs, run_id)
        self._runs[run_id] = run
        return run

    def get(self, run_id: str) -> LocalRun:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFoundError(f"no run {run_id!r} in this executor") from None

    def background_loop(self) -> asyncio.AbstractEventLoop:
        """The loop `submit` runs on: a daemon thread, started on first use."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="dagrelay-loop", daemon=True
                )
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def close(self) -> None:
        """Stop the background loop and the tool threads."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)
        self._threads.shutdown(wait=False, cancel_futures=True)


class _Slots:
    """Acquire semaphores in a fixed order (executor-wide first) and release them all."""

    def __init__(self, sems: list[asyncio.Semaphore]) -> None:
        self._sems = sems
        self._taken: list[asyncio.Semaphore] = []

    async def __aenter__(self) -> None:
        try:
            for s in self._sems:
                await s.acquire()
                self._taken.append(s)
        except BaseException:
            await self.__aexit__()
            raise

    async def __aexit__(self, *exc: object) -> None:
        while self._taken:
            self._taken.pop().release()


class LocalRunHandle(RunHandle):
    """A handle on a run executing on this executor's background loop."""

    def __init__(self, run: LocalRun, future: concurrent.futures.Future[ExecutionResult]):
        self.run_id = run.run_id
        self._run = run
        self._future = future

    def status(self) -> RunStatus:
        return self._run.status()

    def wait(self, timeout: float | None = None) -> ExecutionResult:
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(
                f"run {self.run_id} did not finish within {timeout}s (it is still running)"
            ) from None

    def result(self) -> ExecutionResult:
        return self._run.snapshot()

    def cancel(self) -> None:
        self._run.cancel()

    def events(self, timeout: float | None = None) -> Iterator[RunEvent]:
        return self._run.log.follow(timeout)
