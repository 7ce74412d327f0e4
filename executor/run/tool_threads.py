"""Threads for sync tool calls, where a call that timed out gives its thread up.

A sync call cannot be killed. With a plain thread pool, one that runs past its timeout
keeps its pool thread, and a map of hung calls starves everything after it. Here a
timed-out (or cancelled) call is *abandoned*: its thread leaves the pool (a new one
takes its place, so the pool keeps its size for live calls), gets a `TimeoutError`
raised into it the next time it runs Python bytecode (which stops a loop in Python; a
call blocked in C, `time.sleep` say, ends when that returns), and exits once its call
does. Abandoned threads are counted (`abandoned`); past `max_abandoned` the owner is
told (`on_too_many`: a worker process restarts itself gracefully).

`call_sync` awaits a call with a timeout that starts when the call starts, not when it
was submitted: a call waiting for a thread never times out before it runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import ctypes
import functools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("dagrelay")


@dataclass(eq=False)
class _Work:
    future: concurrent.futures.Future[Any]
    fn: Callable[[], Any]
    thread: int | None = None  # the ident of the thread running it
    running: bool = False
    abandoned: bool = False
    started: list[Callable[[], object]] = field(default_factory=list)


class ToolThreads(concurrent.futures.Executor):
    """A pool of `size` daemon threads for sync calls; see the module's docstring."""

    def __init__(
        self,
        size: int,
        name: str = "dagrelay-tool",
        max_abandoned: int | None = None,
        on_too_many: Callable[[int], None] | None = None,
    ) -> None:
        self.size = size
        self.name = name
        self.max_abandoned = max_abandoned
        self.on_too_many = on_too_many
        self.abandoned = 0  # abandoned calls whose threads still run
        self.abandoned_total = 0
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pool = 0  # threads of the pool (not abandoned)
        self._queued = 0  # calls submitted that no thread has taken yet
        self._waiting = 0  # pool threads waiting for a call
        self._starting = 0  # pool threads spawned, not yet waiting
        self._count = 0
        self._shutdown = False
        self._work: dict[concurrent.futures.Future[Any], _Work] = {}

    def resize(self, size: int) -> None:
        with self._lock:
            self.size = size

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` in a pool thread; a Future of its result."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        work = _Work(future, functools.partial(fn, *args, **kwargs))
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            self._work[future] = work
            self._queued += 1
            spawn = self._wanted()
        self._queue.put(work)
        if spawn:
            self._spawn()
        return future

    def _wanted(self) -> bool:
        """Whether a new thread is wanted now (under the lock; counts it if so): calls
        wait that no idle thread will take, and the pool has room."""
        if self._queued > self._waiting + self._starting and self._pool < self.size:
            self._pool += 1
            self._starting += 1
            return True
        return False

    def _spawn(self) -> None:
        with self._lock:
            self._count += 1
            number = self._count
        threading.Thread(target=self._loop, name=f"{self.name}_{number}", daemon=True).start()

    def when_started(
        self, future: concurrent.futures.Future[Any], then: Callable[[], object]
    ) -> None:
        """Call `then` (in the call's thread) as the call starts, or now if it has."""
        with self._lock:
            work = self._work.get(future)
            if work is not None and not work.running and not future.done():
                work.started.append(then)
                return
        then()

    def in_flight(self) -> int:
        """Calls submitted whose threads have not returned (queued, running, abandoned)."""
        with self._lock:
            return len(self._work)

    def abandon(self, future: concurrent.futures.Future[Any]) -> bool:
        """Give up a call: not started, it never will; running, its thread leaves the
        pool with a `TimeoutError` raised into it. True if it was running."""
        if future.cancel():
            return False
        too_many = 0
        with self._lock:
            work = self._work.get(future)
            if work is None or not work.running or work.abandoned:
                return False
            work.abandoned = True
            self._pool -= 1
            # Its place goes to a new thread at once: calls queued behind it may be
            # waiting for exactly this one.
            spawn = not self._shutdown and self._wanted()
            self.abandoned += 1
            self.abandoned_total += 1
            if self.max_abandoned is not None and self.abandoned > self.max_abandoned:
                too_many = self.abandoned
            if work.thread is not None:  # under the lock: the thread cannot have exited
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(work.thread), ctypes.py_object(TimeoutError)
                )
        if spawn:
            self._spawn()
        if too_many and self.on_too_many is not None:
            self.on_too_many(too_many)
        return True

    def _loop(self) -> None:
        with self._lock:
            self._starting -= 1
            self._waiting += 1
        while True:
            work = self._queue.get()
            with self._lock:
                self._waiting -= 1
                if work is not None:
                    self._queued -= 1
            if work is None:
                return
            if not self._run(work):
                return  # abandoned: this thread left the pool
            with self._lock:
                self._waiting += 1

    def _run(self, work: _Work) -> bool:
        """Run one call; False if it was abandoned meanwhile (the thread then exits)."""
        if not work.future.set_running_or_notify_cancel():
            with self._lock:
                self._work.pop(work.future, None)
            return True
        with self._lock:
            work.thread, work.running = threading.get_ident(), True
            started, work.started = work.started, []
        try:
            for then in started:
                with contextlib.suppress(Exception):
                    then()
            result = work.fn()
        except BaseException as exc:
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)
        try:
            with self._lock:
                work.running = False
                self._work.pop(work.future, None)
                abandoned = work.abandoned
                if abandoned:
                    self.abandoned -= 1
            if not abandoned:
                ok, value = outcome
                if ok:
                    work.future.set_result(value)
                else:
                    work.future.set_exception(value)
            return not abandoned
        except BaseException:  # the TimeoutError raised into an abandoned call, late
            with self._lock:
                if work.abandoned and work.future in self._work:
                    self._work.pop(work.future, None)
                    self.abandoned -= 1
            return False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            pool = self._pool
            pending = list(self._work.values()) if cancel_futures else []
        for work in pending:
            work.future.cancel()
        for _ in range(pool):
            self._queue.put(None)


async def call_sync(
    threads: concurrent.futures.Executor,
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    timeout: float | None,
    name: str,
) -> Any:
    """Await `fn(**kwargs)` in `threads` (in this task's context: its log ids and span).

    With `ToolThreads`, the timeout starts when the call starts and a call that times
    out or is cancelled is abandoned (its thread leaves the pool).

    Raises:
        TimeoutError: the call ran longer than `timeout` seconds.
    """
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, **kwargs)
    future = threads.submit(call)
    done = asyncio.wrap_future(future)
    if timeout is None:
        return await done
    tool_threads = threads if isinstance(threads, ToolThreads) else None
    try:
        if tool_threads is not None:
            started = loop.create_future()
            tool_threads.when_started(future, functools.partial(_notify, loop, started))
            await asyncio.wait((started, done), return_when=asyncio.FIRST_COMPLETED)
        async with asyncio.timeout(timeout):
            return await done
    except TimeoutError:
        if tool_threads is not None:
            tool_threads.abandon(future)
        raise TimeoutError(f"tool {name!r} exceeded its timeout of {timeout}s") from None
    except asyncio.CancelledError:
        if tool_threads is not None:
            tool_threads.abandon(future)
        raise


def _notify(loop: asyncio.AbstractEventLoop, f: asyncio.Future[None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
        loop.call_soon_threadsafe(_set_done, f)


def _set_done(f: asyncio.Future[None]) -> None:
    if not f.done():
        f.set_result(None)
