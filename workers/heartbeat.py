"""Each worker process's heartbeat record in Redis: what it serves, what it runs now.

`dagrelay workers` lists these records, and `run`/`status` read them to say when no live
worker serves a step's queue with its tool (`executor.backends.redis.heartbeats` holds
the layout). A record expires a few beats after its process stops beating, so a killed
worker drops out by itself; one that shuts down cleanly removes its record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from datetime import UTC, datetime
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import Middleware

from executor.backends.redis.heartbeats import RunningUnit, WorkerBeat, remove_beat, write_beat
from executor.version import __version__
from workers.periodic import Periodic
from workers.pipeline import Pipeline

log = logging.getLogger("dagrelay.worker")
# A record outlives its last beat by this many beats: one late beat never hides a worker.
BEATS_TO_EXPIRE = 3


class Heartbeat(Periodic):
    """Writes this process's record every period, until stopped (then removes it)."""

    name = "dagrelay-heartbeat"

    def __init__(self, pipeline: Pipeline, period: float) -> None:
        super().__init__(period)
        self.pipeline = pipeline
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host}:{self.pid}"
        self.started_at = datetime.now(UTC).isoformat()
        self.written = False  # the last beat reached Redis

    def beat(self) -> WorkerBeat:
        """This process's record as of now."""
        p = self.pipeline
        pool = p.pool
        running = [
            RunningUnit(run_id=t.run_id, step=t.unit, attempt=t.attempt, tool=t.tool)
            for t in p.monitor.held()
        ]
        return WorkerBeat(
            id=self.id,
            host=self.host,
            pid=self.pid,
            version=__version__,
            queues=list(p.settings.queues),
            tools=sorted(p.registry.names()),
            threads=pool.sync.capacity,
            async_slots=pool.async_.capacity if pool.async_ is not pool.sync else 0,
            busy=pool.running(),
            running=sorted(running, key=lambda u: (u.run_id, u.step)),
            started_at=self.started_at,
            beat_at=datetime.now(UTC).isoformat(),
        )

    def tick(self) -> None:
        store = self.pipeline.store
        self.written = False
        try:
            write_beat(store.client, store.namespace, self.beat(), self.period * BEATS_TO_EXPIRE)
            self.written = True
        except (redis.RedisError, OSError) as exc:
            # Saying that Redis is unreachable is the connection check's job; the record
            # is written again next beat.
            log.debug("heartbeat not written: %s", exc)

    def start(self) -> None:
        self.tick()  # listed from the moment the process serves, not a beat later
        super().start()

    def stop(self) -> None:
        super().stop()
        if not self.written:  # Redis is away: the client would retry for a minute; it expires
            return
        store = self.pipeline.store
        with contextlib.suppress(redis.RedisError, OSError):  # else it expires by itself
            remove_beat(store.client, store.namespace, self.id)


class HeartbeatMiddleware(Middleware):
    """Beats while the Dramatiq worker runs: from its boot to its shutdown."""

    def __init__(self, pipeline: Pipeline, period: float) -> None:
        self.pipeline = pipeline
        self.period = period
        self.heartbeat: Heartbeat | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        # Here, not at import: the pool has its `--threads` by now, and the pid is the
        # worker process's own (Dramatiq forks after importing the broker).
        self.heartbeat = Heartbeat(self.pipeline, self.period)
        self.heartbeat.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None


__all__ = ["BEATS_TO_EXPIRE", "Heartbeat", "HeartbeatMiddleware"]
