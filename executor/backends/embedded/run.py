"""One run on the embedded backend: its steps as asyncio tasks, its records, its events."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, Protocol

from executor.errors import ToolOutputError
from executor.model.dag import Dag
from executor.model.references import Scope
from executor.model.retry import NO_RETRY
from executor.model.tools import Tool, ToolRegistry, check_output_size
from executor.observability.logs import bind as bind_log_ids
from executor.result import ExecutionResult
from executor.run.attempts import CUT, map_step, now, run_attempts
from executor.run.context import StepContext
from executor.run.events import EventLog
from executor.run.progress import AttemptProgress, StepProgress, to_datetime
from executor.run.records import (
    TERMINAL_RUN,
    TERMINAL_STEP,
    RunStatus,
    StepError,
    StepRecord,
    StepStatus,
    summarize,
)
from executor.run.scheduling import Actions, RunState, stop_error

# A task runs at most this many steps in a row before it lets the loop run others.
_YIELD_EVERY = 16
# Stands in `LocalRun.records` for a step whose final record is built.
_TAKEN = StepProgress("", "")


class Host(Protocol):
    """What a run takes from the backend it runs on (`LocalBackend`)."""

    registry: ToolRegistry
    worker: str
    max_concurrency: int | None
    max_output_bytes: int | None

    def slot(self, tool: Tool) -> contextlib.AbstractAsyncContextManager[Any]: ...

    def call(self, tool: Tool, kwargs: dict[str, Any], timeout: float | None) -> Awaitable[Any]: ...


class LocalRun:
    """One run on an event loop: starts each step the moment its dependencies are done."""

    def __init__(self, backend: Host, dag: Dag, inputs: Any, run_id: str) -> None:
        self.backend = backend
        self.dag = dag
        self.flow = dag.flow
        self.inputs = inputs
        self.run_id = run_id
        self.state = RunState(dag, inputs)
        # What every step resolves its inputs against, and the hooks it calls: made once
        # per run, not per step.
        self._scope = Scope(inputs, self.state.outputs)
        self._resolve = self._scope.resolve
        self._on_start = self._started
        self._on_retry = self._retrying
        self._call = backend.call
        # Plain records while the run goes on; the pydantic ones are built from them.
        self.records = {sid: StepProgress(sid, step.tool) for sid, step in dag.steps.items()}
        self._taken: dict[str, StepRecord] = {}  # final records built so far, by step
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
        self._bases: dict[str, int] = {}  # attempts a rerun's steps made in earlier passes

    def seed(self, previous: ExecutionResult, keep: list[str], again: list[str]) -> None:
        """Before `execute`: this run is a rerun of `previous` (same id): `keep` stay as
        they ended, `again` run again after their earlier attempts."""
        self.state.reuse({sid: previous.steps[sid].output for sid in keep})
        for sid in keep:
            self.records[sid] = StepProgress.from_record(previous.steps[sid])
        for sid in again:
            earlier = previous.steps[sid].attempts if sid in previous.steps else []
            self.records[sid].attempts = [AttemptProgress.from_attempt(a) for a in earlier]
            self._bases[sid] = max((a.number for a in earlier), default=0)
        self.submitted_at = previous.submitted_at or self.submitted_at
        self.started_at = previous.started_at

    # Running ---------------------------------------------------------------------
    async def execute(self) -> ExecutionResult:
        """Run to the end (or the flow's timeout) and return the result."""
        self.loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        # A rerun's wall clock runs from its first pass's start (as on Redis).
        t_start = self.started_at.timestamp() if self.started_at is not None else None
        self.started_at = self.started_at or now()
        self._t0 = time.perf_counter() - (time.time() - t_start if t_start is not None else 0.0)
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
        finished = time.time()
        self.finished_at = to_datetime(finished)
        self._run_status = self.state.run_status()
        result = self._result(self._take_records())
        # The result may turn `succeeded` into `failed` (the flow output cannot be
        # resolved): the handle's status and the final event must say the same.
        self._run_status = result.status
        summarize(result, self.dag.deps, self.dag.topological_order())
        self._final = result
        self.records = {}  # after `_final`: see `snapshot`
        self.log.add(None, result.status, finished, error=result.error)
        self.log.close()
        return result

    def _apply(self, actions: Actions, task: asyncio.Task[Any] | None = None) -> str | None:
        """Record and announce what `actions` resolved, start what they made ready.

        Args:
            task: the task of a step that just finished, free to run one ready step
                itself (returned) instead of starting a task for it.
        """
        inline = None
        for sid, status, error in actions.resolved:
            rec = self.records[sid]
            rec.status = status
            rec.error = error
            self._emit(sid, status, error=str(error) if error else None)
            waiting = self.tasks.get(sid)
            if waiting is not None:
                # Queued (e.g. waiting for a concurrency slot) when the run stopped: its
                # task must not go on to call the tool.
                waiting.cancel()
        if actions.run:
            loop = asyncio.get_running_loop()
            for sid in actions.run:
                rec = self.records[sid]
                rec.status = "queued"
                rec.queued_at = queued = time.time()
                if task is not None and inline is None:
                    # A new task per step would cost a loop iteration before it starts:
                    # the first one runs next in the task at hand.
                    self.tasks[sid] = task
                    inline = sid
                else:
                    self.tasks[sid] = loop.create_task(self._run_steps(sid))
                self.log.add(sid, "queued", queued)
        for sid in actions.cancel_running:
            running = self.tasks.get(sid)
            if running is not None:
                running.cancel()
        if self.state.finished and self._done is not None:
            self._done.set()
        return inline

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
        at: float | None = None,
    ) -> None:
        self.log.add(sid, status, time.time() if at is None else at, attempt, error)

    # Steps -----------------------------------------------------------------------
    async def _run_steps(self, sid: str) -> None:
        """Run a step, then one it made ready, and so on, in this one task."""
        task: asyncio.Task[Any] | None = None
        ran = 0
        next_sid: str | None = sid
        while next_sid is not None:
            ran += 1
            if ran % _YIELD_EVERY == 0:
                # Tools that never suspend would otherwise hold the loop for a whole
                # chain: let timeouts, cancels and other tasks in now and then.
                await asyncio.sleep(0)
            actions = await self._run_step(next_sid)
            if actions is None:
                return
            if task is None and actions.run:
                task = asyncio.current_task()
            next_sid = self._apply(actions, task)

    async def _run_step(self, sid: str) -> Actions | None:
        """Run one queued step to its end; what that changes (None: nothing to do)."""
        step = self.dag.steps[sid]
        rec = self.records[sid]
        bind_log_ids(self.run_id, sid)  # this task's own context: its tool's log records
        backend = self.backend
        tool = backend.registry.get(step.tool)
        policy = step.retry or tool.retry or NO_RETRY
        timeout = step.timeout if step.timeout is not None else tool.timeout
        status: StepStatus
        output: Any = None
        # No limit configured: no slot to take (the common case stays cheap). A partial,
        # not a lambda: a closure would make cells of its variables on every call.
        slot = None
        if backend.max_concurrency is not None or tool.max_concurrency is not None:
            slot = functools.partial(backend.slot, tool)
        context = StepContext(self.run_id, self.dag.flow.name, sid, worker=backend.worker)
        try:
            if step.map is not None:
                status, output = await map_step(
                    rec,
                    step,
                    tool,
                    policy,
                    timeout,
                    self._scope,
                    self.dag.predicates.get(sid),
                    self._call,
                    backend.worker,
                    slot=slot,
                    t_queued=time.perf_counter(),
                    on_start=self._on_start,
                    context=context,
                    base=self._bases.get(sid, 0),
                )
            else:
                status, output = await run_attempts(
                    rec,
                    tool,
                    policy,
                    timeout,
                    step.inputs,
                    self._resolve,
                    self._call,
                    backend.worker,
                    slot=slot,
                    t_queued=time.perf_counter(),
                    on_start=self._on_start,
                    on_retry=self._on_retry,
                    context=context,
                    base=self._bases.get(sid, 0),
                )
        except asyncio.CancelledError:
            status = "cancelled"
            self._end_timing(rec)
            self._cut_short(rec, interrupted=True)
        else:
            # Ended after a stop that did not spare it: cancelled, whatever the tool did.
            if self.state.scheduler.settled(sid, status, self.state.stop_reason) != status:
                status = "cancelled"
                self._cut_short(rec, interrupted=False)
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
            return None
        rec.status = status
        if status == "succeeded":
            rec.output = output
        error = str(rec.error) if rec.error else None
        self.log.add(sid, status, time.time(), len(rec.attempts) or None, error)
        return self.state.finish(sid, status, output)

    def _started(self, rec: StepProgress, number: int, _: StepError | None) -> None:
        self.state.mark_running(rec.step_id)
        self.log.add(rec.step_id, "running", rec.started_at or time.time(), number)

    def _retrying(self, rec: StepProgress, number: int, error: StepError | None) -> None:
        self._emit(rec.step_id, "retrying", number, str(error))

    def _cut_short(self, rec: StepProgress, interrupted: bool) -> None:
        """A cancelled step's attempt (and items) that the stop cut short say so; the
        step's error is its final attempt's: the stop's, a failure's (it waited to retry),
        or None (it never started).

        Args:
            interrupted: its task was cancelled; else it ended after the stop on its own.
        """
        err = stop_error(self.state.stop_reason or "cancelled")
        last = rec.attempts[-1] if rec.attempts else None
        rec.error = last.error if last is not None else None  # its final attempt's
        if last is not None and (last.error is CUT or not interrupted):
            last.error = rec.error = err
        for item in rec.items or ():
            for a in item.attempts:
                if a.error is CUT:
                    a.error = item.error = err

    def _end_timing(self, rec: StepProgress) -> None:
        """Close the timing of a step cancelled while it waited to retry."""
        if rec.started_at is not None:
            rec.finished_at = time.time()
            rec.duration = rec.finished_at - rec.started_at

    # Results ---------------------------------------------------------------------
    def status(self) -> RunStatus:
        return self._run_status

    def snapshot(self) -> ExecutionResult:
        """The result as it stands (final once the run finished); from any thread."""
        if self._final is not None:
            return self._final
        # Fresh models: a live snapshot shares no attempt list with a running step.
        steps = {}
        for sid, rec in self.records.items():
            if rec is _TAKEN:  # the run is finishing: its final model is built
                steps[sid] = self._taken[sid].model_copy(deep=True)
            else:
                steps[sid] = rec.to_record()
        result = self._result(steps)
        # The run may have finished meanwhile (and let go of `records`): then its final
        # result is the one to return.
        return self._final or result

    def _take_records(self) -> dict[str, StepRecord]:
        """The final records, each plain one let go as soon as its model is built (a
        run's two copies would otherwise both be alive at the end: a 10,000-step run's
        peak memory)."""
        taken = self._taken
        records = self.records
        for sid, rec in records.items():
            taken[sid] = rec.to_record()
            records[sid] = _TAKEN  # (replacing a value is safe while others iterate)
        return taken

    def _result(self, steps: dict[str, StepRecord]) -> ExecutionResult:
        status = self._run_status
        output = None
        error = None
        if status == "succeeded" and self.flow.output is not None:
            try:
                output = Scope(self.inputs, self.state.outputs).resolve(self.flow.output)
            except Exception as exc:
                status, error = "failed", f"output: {exc}"
        elif status in TERMINAL_RUN and status != "succeeded":
            error = self._error_summary(status, steps)
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

    def _error_summary(self, status: RunStatus, steps: dict[str, StepRecord]) -> str | None:
        failed = self.state.failed
        first = failed[0] if failed else None
        error = steps[first].error if first is not None else None
        return self.state.scheduler.run_error(status, first, len(failed), error)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
