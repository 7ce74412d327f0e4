"""A worker process that asks its supervisor to replace it (to be rid of hung threads)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import TYPE_CHECKING

from executor.run.tool_threads import ToolThreads

if TYPE_CHECKING:
    from workers.settings import Settings

log = logging.getLogger("dagrelay.worker")
# Set by `dagrelay worker` so that importing `workers` in its supervisor builds no
# broker: the worker processes build theirs (`workers.supervisor.boot`), after the fork.
SUPERVISED_ENV = "DAGRELAY_SUPERVISED"
# A worker process that exits with this asks to be replaced (not counted as a crash).
RESTART_EXIT = 75

_restart = threading.Event()  # this worker process asked to be replaced


def request_restart(reason: str) -> None:
    """Stop this worker process gracefully and have the supervisor start another (under
    plain `dramatiq workers`, which would stop the whole node, only say so)."""
    if not os.environ.get(SUPERVISED_ENV):
        log.error("%s: restart this worker to be rid of them", reason)
        return
    if not _restart.is_set():
        _restart.set()
        log.warning("%s: this worker process stops gracefully and is replaced", reason)
        os.kill(os.getpid(), signal.SIGTERM)  # Dramatiq's own graceful stop


def abandoning_threads(size: int, settings: Settings) -> ToolThreads:
    """A worker process's tool threads: past the cap of abandoned calls, it restarts."""
    cap = settings.max_abandoned or size

    def too_many(n: int) -> None:
        request_restart(f"{n} sync tool calls given up at their timeout still run (cap {cap})")

    return ToolThreads(size, max_abandoned=cap, on_too_many=too_many)


def restart_requested() -> bool:
    """Whether this process asked to be replaced (it then exits with `RESTART_EXIT`)."""
    return _restart.is_set()
