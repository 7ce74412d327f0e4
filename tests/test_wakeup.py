"""The waking broker on a real redis-server: idle consumers block on Redis and wake
when work arrives (fresh or delayed), delivery stays Dramatiq's, garbage loses nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.common import dq_name, xq_name

from executor.backends.redis.wakeup import WakingRedisBroker, wake_key
from tests.support.servers import RedisServer

# Long enough that "woke because of the token" and "woke because the wait ran out"
# cannot be confused on a loaded machine.
IDLE_MS = 8000


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    s = RedisServer().start()
    yield s
    s.close()


@pytest.fixture
def broker(server: RedisServer) -> Iterator[WakingRedisBroker]:
    client = redis.Redis.from_url(server.url)
    client.flushall()
    b = WakingRedisBroker(client=client, middleware=[])
    b.declare_queue("q")
    yield b
    b.close()


def message(n: int, queue: str = "q") -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=queue, actor_name="noop", args=(n,), kwargs={}, options={})


def next_message(consumer: Any, limit: float) -> tuple[Any, float]:
    """Iterate a consumer as Dramatiq's consumer thread does, until a message comes."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        got = next(consumer)
        if got is not None:
            return got, time.monotonic() - start
    raise AssertionError(f"no message within {limit}s")


def idle(consumer: Any) -> None:
    # One empty fetch, then the consumer is parked on its wake list.
    consumer.broker.client.delete(wake_key(consumer.broker.namespace, consumer.queue_name))


def send_later(broker: WakingRedisBroker, msg: dramatiq.Message[Any], delay_ms: int | None = None):
    t = threading.Timer(0.3, lambda: broker.enqueue(msg, delay=delay_ms))
    t.start()
    return t


def test_an_idle_consumer_wakes_when_a_message_arrives(broker: WakingRedisBroker) -> None:
    consumer = broker.consume("q", prefetch=4, timeout=IDLE_MS)
    idle(consumer)
    timer = send_later(broker, message(1))
    got, waited = next_message(consumer, IDLE_MS / 1000 * 2)
    timer.join()
    assert got.args == (1,)
    # Woken by the enqueue (sent after 0.3 s), not by the 8 s idle wait running out.
    assert waited < IDLE_MS / 1000 / 2


def test_a_delayed_message_wakes_the_delay_queue_consumer(broker: WakingRedisBroker) -> None:
    consumer = broker.consume(dq_name("q"), prefetch=4, timeout=IDLE_MS)
    idle(consumer)
    timer = send_later(broker, message(2), delay_ms=50)
    got, waited = next_message(consumer, IDLE_MS / 1000 * 2)
    timer.join()
    assert got.args == (2,)
    assert "eta" in got.options  # still Dramatiq's delayed message, held by its eta
    assert waited < IDLE_MS / 1000 / 2


def test_a_lost_token_costs_one_idle_wait_not_the_message(broker: WakingRedisBroker) -> None:
    consumer = broker.consume("q", prefetch=4, timeout=300)
    idle(consumer)
    broker.enqueue(message(3))
    broker.client.delete(wake_key(broker.namespace, "q"))  # the hint is gone
    got, _ = next_message(consumer, 5)
    assert got.args == (3,)


def test_enqueue_many_delivers_every_message_once_in_order(broker: WakingRedisBroker) -> None:
    sent = broker.enqueue_many([(message(i), None) for i in range(50)])
    assert len({m.options["redis_message_id"] for m in sent}) == 50
    consumer = broker.consume("q", prefetch=64, timeout=300)
    got = [next_message(consumer, 5)[0] for _ in range(50)]
    assert [m.args[0] for m in got] == list(range(50))
    for m in got:
        consumer.ack(m)
    assert broker.client.hlen(f"{broker.namespace}:q.msgs") == 0
    # Tokens are bounded however many messages were sent.
    assert broker.client.llen(wake_key(broker.namespace, "q")) <= 64


def test_an_undecodable_message_goes_to_the_dead_letters_and_the_batch_survives(
    broker: WakingRedisBroker,
) -> None:
    """Dramatiq's own consumer raises on it and strands the rest of the fetched batch."""
    client = broker.client
    ns = broker.namespace
    broker.enqueue(message(1))
    client.hset(f"{ns}:q.msgs", "garbage-id", b"\x00not json{")
    client.rpush(f"{ns}:q", "garbage-id")
    broker.enqueue(message(2))
    consumer = broker.consume("q", prefetch=8, timeout=300)
    got = [next_message(consumer, 5)[0] for _ in range(2)]
    assert [m.args for m in got] == [(1,), (2,)]
    # Moved to the dead-letter queue, out of this worker's ack set.
    assert client.zscore(f"{ns}:{xq_name('q')}", "garbage-id") is not None
    assert not client.sismember(f"{ns}:__acks__.{broker.broker_id}.q", "garbage-id")
    assert client.hget(f"{ns}:q.msgs", "garbage-id") is None
    for m in got:
        consumer.ack(m)
    assert client.scard(f"{ns}:__acks__.{broker.broker_id}.q") == 0


def test_a_shutdown_wakes_the_idle_consumers_of_this_broker_only(
    broker: WakingRedisBroker, server: RedisServer
) -> None:
    """A stopping worker must not wait out its consumers' idle timeout, and must not
    take wake-ups meant for other workers' consumers."""
    other = WakingRedisBroker(client=redis.Redis.from_url(server.url), middleware=[])
    other.declare_queue("q")
    mine, theirs = broker.consume("q", timeout=IDLE_MS), other.consume("q", timeout=IDLE_MS)
    idle(mine)
    timer = threading.Timer(0.3, lambda: broker.wake_to_stop(consumers=1))
    timer.start()
    start = time.monotonic()
    assert next(mine) is None
    woke = time.monotonic() - start
    timer.join()
    assert 0.2 < woke < IDLE_MS / 1000 / 2  # by the stop, not by the idle wait running out
    start = time.monotonic()
    for _ in range(5):  # stopping: it never blocks again until its thread is stopped
        assert next(mine) is None
    assert time.monotonic() - start < 1
    # The other broker's consumer sleeps on: the stop was not its.
    assert not other.stopping.is_set()
    timer = threading.Timer(0.3, lambda: other.enqueue(message(5)))
    timer.start()
    got, waited = next_message(theirs, IDLE_MS / 1000 * 2)
    timer.join()
    assert got.args == (5,) and waited > 0.2
    other.close()
