"""The embedded backend: the scheduling core driven by asyncio tasks in this process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Iterator
from typing import Any

from executor.backends.embedded.run import LocalRun
from executor.errors import RunNotFoundError
from executor.handle import RunHandle
from executor.model.dag import Dag
from executor.model.tools import Tool, ToolRegistry
from executor.result import ExecutionResult
from executor.run.attempts import call_tool
from executor.run.events import RunEvent
from executor.run.records import RunStatus
from executor.run.tool_threads import ToolThreads

__all__ = ["LocalBackend", "LocalRun", "LocalRunHandle"]


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
        # A sync call that times out gives its thread up (see ToolThreads).
        self._threads = ToolThreads(max_threads)
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

    def call(self, tool: Tool, kwargs: dict[str, Any], timeout: float | None) -> Awaitable[Any]:
        """Call a tool (sync ones in this backend's threads) with a timeout."""
        if tool.is_async and timeout is None:
            return tool.fn(**kwargs)  # all `call_tool` would do: skip its frame
        return call_tool(tool, kwargs, timeout, self._threads)

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

    def sync_calls_running(self) -> int:
        """Sync tool calls whose threads have not returned (a cancelled or timed-out call
        runs on in its thread: `dagrelay run` waits for them on Ctrl-C)."""
        return self._threads.in_flight()

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
