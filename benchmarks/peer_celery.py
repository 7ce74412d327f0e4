"""The Celery peer: the bench's work as Celery tasks, a Redis broker and result backend.

Run as `celery -A benchmarks.peer_celery worker --pool threads --concurrency N` with
BENCH_REDIS_URL set: each worker is a real process, like `dagrelay worker`; the bench
starts two of them and sends canvases (`chain(root, group(leaves))`) from its own process.
Celery's settings are its defaults except what a bench needs (no events, no gossip).
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

from benchmarks import work

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("dagrelay-bench", broker=URL, backend=URL)
app.conf.update(
    task_default_queue="bench",
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@worker_ready.connect
def _say_ready(sender: Any = None, **_: Any) -> None:
    """Tell the bench this worker consumes (its log stays at WARNING: no line per task)."""
    redis.Redis.from_url(URL).rpush("bench:celery:ready", os.getpid())


@app.task(name="bench.root")
def root() -> int:
    return work.noop()


@app.task(name="bench.burn")
def burn(after: Any, n: int) -> list[int]:
    return work.burn(n, after)


@app.task(name="bench.sleep_sync")
def sleep_sync(after: Any, seconds: float) -> list[int]:
    return work.sleep_sync(seconds, after)
