"""Worker heartbeats in Redis: what each live worker process serves and is running.

Each worker process writes its record (`N:worker:HOST:PID`, JSON) every beat with an
expiry of a few beats, and scores its id in `N:workers` by that expiry: a process that
dies stops beating and drops out of every listing once its record expires, with nothing
to clean up. Workers write through `write_beat`; clients (`dagrelay workers`, the
"no live worker" hint of `run` and `status`) read through `live_workers`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import redis
from pydantic import BaseModel, Field


class RunningUnit(BaseModel):
    """A unit a worker process holds now: a step, or an item `step[i]` of a map step."""

    run_id: str
    step: str
    attempt: int
    tool: str


class WorkerBeat(BaseModel):
    """One worker process as its last heartbeat described it."""

    id: str  # HOST:PID
    host: str
    pid: int
    version: str
    queues: list[str]
    tools: list[str]
    threads: int  # sync slots
    async_slots: int  # 0: async calls share the sync slots
    busy: int = 0  # slots taken now
    running: list[RunningUnit] = Field(default_factory=list)
    started_at: str  # ISO UTC
    beat_at: str  # ISO UTC
    expires: float = 0.0  # epoch seconds; filled in by the reader


def index_key(namespace: str) -> str:
    return f"{namespace}:workers"


def beat_key(namespace: str, worker_id: str) -> str:
    return f"{namespace}:worker:{worker_id}"


def write_beat(client: redis.Redis, namespace: str, beat: WorkerBeat, ttl: float) -> None:
    """Store a worker's record for `ttl` seconds (one round trip)."""
    expires = time.time() + ttl
    pipe = client.pipeline(transaction=False)
    pipe.set(beat_key(namespace, beat.id), beat.model_dump_json(), px=max(1, int(ttl * 1000)))
    pipe.zadd(index_key(namespace), {beat.id: expires})
    # Ids of processes gone for a while: the index stays the size of the live pool.
    pipe.zremrangebyscore(index_key(namespace), "-inf", time.time() - 60)
    pipe.execute()


def remove_beat(client: redis.Redis, namespace: str, worker_id: str) -> None:
    """A worker that stops cleanly leaves the listing at once."""
    pipe = client.pipeline(transaction=False)
    pipe.delete(beat_key(namespace, worker_id))
    pipe.zrem(index_key(namespace), worker_id)
    pipe.execute()


def live_workers(client: redis.Redis, namespace: str = "dagrelay") -> list[WorkerBeat]:
    """The worker processes whose heartbeat has not expired, by host and pid."""
    now = time.time()
    scored = client.zrangebyscore(index_key(namespace), now, "+inf", withscores=True)
    if not scored:
        return []
    ids = [_text(i) for i, _ in scored]
    values = client.mget([beat_key(namespace, i) for i in ids])
    out = []
    for (_, expires), value in zip(scored, values, strict=True):
        beat = _parse(value)
        if beat is not None:
            beat.expires = float(expires)
            out.append(beat)
    return sorted(out, key=lambda b: (b.host, b.pid))


def unserved(
    workers: Iterable[WorkerBeat], wanted: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Of (queue, tool) pairs, those that no live worker serves (its queue with its
    tool), in the order given."""
    served = {(q, t) for w in workers for q in w.queues for t in w.tools}
    return [p for p in dict.fromkeys(wanted) if p not in served]


def no_worker_message(queue: str, tool: str) -> str:
    return f"no live worker serves queue {queue!r} with tool {tool!r}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse(value: Any) -> WorkerBeat | None:
    if value is None:
        return None
    try:
        return WorkerBeat.model_validate(json.loads(_text(value)))
    except (ValueError, TypeError):  # a record of another version: not ours to read
        return None


__all__ = [
    "RunningUnit",
    "WorkerBeat",
    "beat_key",
    "index_key",
    "live_workers",
    "no_worker_message",
    "remove_beat",
    "unserved",
    "write_beat",
]
