"""Async steps that do not hold a worker thread while they wait (opt-in).

Dramatiq runs one message per worker thread, so a process runs at most `--threads`
steps at once, even when they only await I/O. With `--async-steps N` a worker thread
claims an async tool's step, hands the call to this process's event loop and returns:
its message is acknowledged and the thread takes the next one, while up to N such steps
await together. The step stays safe without its message: its claim and lease live in
Redis, the lease monitor renews it, and should the process die the sweeper sends it
again. Recording the result (Redis, sync) happens in a small thread pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("dagrelay.worker")


class AsyncSteps:
    """One event loop thread, a bound on steps in flight, and a pool for recording."""

    def __init__(self, limit: int, record_threads: int = 8) -> None:
        self.slots = threading.BoundedSemaphore(limit)
        self.pool = concurrent.futures.ThreadPoolExecutor(
            record_threads, thread_name_prefix="dagrelay-record"
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="dagrelay-async", daemon=True
        )
        self._inflight: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` on the loop; the caller has taken a slot, the coroutine frees it."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        with self._lock:
            self._inflight.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._inflight.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("detached step failed", exc_info=future.exception())

    def drain(self, timeout: float) -> None:
        """Wait for the steps in flight (graceful shutdown), then stop the loop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._inflight:
                    break
            time.sleep(0.05)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.pool.shutdown(wait=True, cancel_futures=False)
