"""The peer: plain Dramatiq actors on a Redis of the same kind, the same worker settings.

Run as `dramatiq benchmarks.raw_dramatiq` with BENCH_REDIS_URL set; Dramatiq's defaults
otherwise (its prefetch, its polling consumer). Each actor reports its completion by
pushing onto a Redis list the benchmark blocks on.
"""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from benchmarks import work

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


@dramatiq.actor(queue_name="raw", max_retries=0)
def raw_fan(tag: str, kind: str, arg: float, count: int) -> None:
    """A root that sends its `count` leaves when it runs, as a Dramatiq user would."""
    for _ in range(count):
        raw_leaf.send(tag, kind, arg, count)


@dramatiq.actor(queue_name="raw", max_retries=0)
def raw_leaf(tag: str, kind: str, arg: float, count: int) -> None:
    """`burn` or `sleep_sync` of benchmarks.work; counts its process and how many its
    process was running; the last of the `count` says done."""
    pid, in_flight = work.burn(int(arg)) if kind == "burn" else work.sleep_sync(arg)
    pipe = _client.pipeline()
    pipe.hincrby(f"raw:pids:{tag}", str(pid), 1)
    pipe.rpush(f"raw:in_flight:{tag}", in_flight)
    pipe.incr(f"raw:count:{tag}")
    if pipe.execute()[1] == count:
        _client.rpush(f"raw:done:{tag}", 1)
