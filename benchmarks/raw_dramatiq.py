"""The peer: plain Dramatiq actors on the same Redis and worker settings.

Run as `dramatiq benchmarks.raw_dramatiq` with BENCH_REDIS_URL set. Each actor reports
its completion by pushing onto a Redis list the benchmark blocks on.
"""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
broker = RedisBroker(url=URL)
dramatiq.set_broker(broker)
_client = redis.Redis.from_url(URL)


@dramatiq.actor(queue_name="raw", max_retries=0)
def raw_noop(tag: str, last: bool = False) -> None:
    """A no-op that says it finished when it is the last of its batch (or chain)."""
    if last or tag.startswith("each:"):
        _client.rpush(f"raw:done:{tag.removeprefix('each:')}", 1)


def pipeline(n: int, tag: str) -> dramatiq.pipeline:
    msgs = [raw_noop.message_with_options(args=(tag,), pipe_ignore=True) for _ in range(n - 1)]
    msgs.append(raw_noop.message_with_options(args=(tag, True), pipe_ignore=True))
    return dramatiq.pipeline(msgs, broker=broker)
