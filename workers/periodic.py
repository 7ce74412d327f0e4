"""A daemon thread that does one thing every period until stopped."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("dagrelay.worker")


class Periodic:
    """Calls `tick()` every `period` seconds in its own thread; errors are logged, the
    thread goes on (a Redis hiccup must not end a worker's sweeper or heartbeat)."""

    name = "dagrelay-periodic"

    def __init__(self, period: float) -> None:
        self.period = period
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def tick(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stopping.wait(self.period):
            try:
                self.tick()
            except Exception:
                log.warning("%s failed", self.name, exc_info=True)
