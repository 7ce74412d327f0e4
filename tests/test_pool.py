"""A worker process's slots and its one pipeline, on fakeredis in this process.

The slots (`workers.pool.Pool`): every unit takes one of its kind, whatever brought it;
a consumer fetches no more messages than there are free slots. The pipeline: a chain
goes on in place in one round trip a hop, units that end together are recorded in one,
a step's dependents stay here only into free slots (the rest go to the queue for any
worker), a sync call abandoned at its timeout keeps its slot until its thread returns,
a stop reaches running attempts at once. The same behaviours across real worker
processes: tests/test_workers_pool.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from executor import Flow, Step, ToolRegistry, tool
from executor.backends.redis.messages import Token, local_share, per_token
from tests.conformance.support import wide_fan
from tests.test_distributed import events_of, wait_until
from workers.pool import Pool

pytestmark = pytest.mark.timeout(60)


# The pool ----------------------------------------------------------------------------
def test_a_slot_is_held_for_a_fetched_message_until_its_actor_takes_it() -> None:
    pool = Pool(threads=3)
    assert pool.hold("q", 5) == 1  # one message at a time: its take may claim several
    assert pool.hold("q", 5) == 0  # not before that one is taken
    assert pool.free("q") == 2
    assert pool.take_hold("q")
    assert pool.hold("q", 5) == 1
    pool.unhold("q", 1)  # no message came after all
    assert pool.free("q") == 2 and pool.running() == 1
    assert not pool.take_hold("q")  # nothing held any more
    assert pool.reserve("q", 5) == 2 and pool.hold("q", 1) == 0  # none free
    pool.release("q", 3)
    assert pool.free("q") == 3


def test_async_steps_have_slots_of_their_own_or_share_the_threads() -> None:
    shared = Pool(threads=2, async_steps=0)
    assert shared.reserve("q.async", 5) == 2 and shared.reserve("q") == 0
    own = Pool(threads=2, async_steps=10)
    assert own.reserve("q.async", 20) == 10 and own.reserve("q", 5) == 2
    assert own.running() == 12


def test_a_waiting_consumer_wakes_when_a_slot_frees() -> None:
    pool = Pool(threads=1)
    pool.reserve("q")
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(pool.wait_free("q", 5)))
    waiter.start()
    time.sleep(0.05)
    pool.release("q")
    waiter.join(1)
    assert woke == [True]


def test_a_consumer_fetches_no_more_messages_than_free_slots(fake) -> None:
    from executor.backends.redis.wakeup import _WakingConsumer

    broker = fake.broker
    pool = fake.pipeline.pool
    pool.resize(2)
    broker.declare_queue("dagrelay")
    from executor.backends.redis.backend import BrokerSender

    BrokerSender(broker).send_many([Token(f"r{i}", "dagrelay") for i in range(5)])
    consumer = broker.consume("dagrelay", prefetch=10, timeout=50)
    assert isinstance(consumer, _WakingConsumer)
    first = next(consumer)
    assert first is not None and pool.free("dagrelay") == 1  # one held for it
    assert next(consumer) is None  # the next one waits until that one is taken
    assert pool.take_hold("dagrelay")
    assert next(consumer) is not None  # the second slot
    pool.take_hold("dagrelay")
    assert next(consumer) is None  # no slot left: the others stay on the queue
    assert broker.client.llen("dramatiq:dagrelay") == 3
    consumer.close()


# The pipeline ------------------------------------------------------------------------
def test_a_chain_goes_on_in_place_in_one_store_round_trip_a_hop(fake, monkeypatch) -> None:
    """The completion of a step and the claim of the next share a round trip."""
    n = 30
    steps = [Step(id="s0", tool="add", inputs={"a": 0, "b": 1})]
    steps += [
        Step(id=f"s{i}", tool="add", inputs={"a": f"$steps.s{i - 1}", "b": 1}) for i in range(1, n)
    ]
    handle = fake.executor.submit(Flow(name="chain", steps=steps, output=f"$steps.s{n - 1}"))
    batches: list[Any] = []
    real = fake.store._batch
    monkeypatch.setattr(fake.store, "_batch", lambda cmds: batches.append(cmds) or real(cmds))
    fake.pipeline.take(handle.run_id, "dagrelay", 1)  # the roots' token, by hand
    result = handle.wait(timeout=10)
    assert result.status == "succeeded" and result.output == n
    scripts = [c for cmds in batches for c in cmds if c[0] == "EVALSHA"]
    assert len(batches) <= n + 3, f"{len(batches)} round trips for {n} hops"
    assert len(scripts) <= n + 3, f"{len(scripts)} scripts for {n} hops"  # one script a hop
    # Yet every step was claimed on its own: queued and running, once each.
    for status in ("queued", "running"):
        seen = sorted(
            e["step"] for e in events_of(fake.store, handle.run_id) if e["status"] == status
        )
        assert seen == sorted(f"s{i}" for i in range(n))
    for i in range(1, n):
        rec = result.steps[f"s{i}"]
        assert [a.number for a in rec.attempts] == [1]
        assert rec.started_at >= result.steps[f"s{i - 1}"].finished_at


def test_dependents_stay_only_into_free_slots_and_the_rest_are_queued(fake) -> None:
    """A root with 10 dependents on a worker of 4 slots: its completion claims ahead or
    keeps at most 4 (the slot it frees and the 3 others), and queues the rest at once for
    any worker."""
    fake.pipeline.pool.resize(4)
    flow = wide_fan(10, Step(id="w", tool="sleep", inputs={"seconds": 0.3}))
    handle = fake.executor.submit(flow)
    fake.pipeline.take(handle.run_id, "dagrelay", 1)  # the root (sync), here
    assert wait_until(lambda: fake.store.all_statuses(handle.run_id)["root"] == "succeeded", 5)

    def leaves() -> list[str]:
        statuses = fake.store.all_statuses(handle.run_id)
        return [statuses[f"w{i}"] for i in range(10)]

    assert wait_until(lambda: leaves().count("queued") == 6, 5), leaves()
    assert leaves().count("running") == 4
    assert fake.pipeline.pool.running() <= 4
    fake.start_worker()
    assert handle.wait(timeout=10).status == "succeeded"


def test_a_wide_fan_starts_a_share_here_and_sends_the_rest_to_the_pool(fake) -> None:
    """A root with 100 dependents on a worker with 100 free slots: it starts what one
    token carries (12) and queues the other 88 at once, in tokens of 12, for any worker
    (starting all 100 here would make the last wait for the 99 before it to start while
    other workers idle)."""
    fake.pipeline.pool.resize(100)
    flow = wide_fan(100, Step(id="w", tool="sleep", inputs={"seconds": 0.5}))
    handle = fake.executor.submit(flow)
    fake.pipeline.take(handle.run_id, "dagrelay", 1)  # the root (sync), here

    def leaves() -> list[str]:
        statuses = fake.store.all_statuses(handle.run_id)
        return [statuses[f"w{i}"] for i in range(100)]

    assert wait_until(lambda: leaves().count("queued") == 88, 5), leaves()
    assert leaves().count("running") == 12 == per_token(100) == local_share(100)
    tokens = lambda: fake.broker.client.llen("dramatiq:dagrelay.async")  # noqa: E731
    assert wait_until(lambda: tokens() == 8, 5), tokens()  # ceil(88 / per_token(88)) tokens
    time.sleep(0.1)
    assert tokens() == 8
    fake.start_worker()
    assert handle.wait(timeout=10).status == "succeeded"


def test_units_that_end_together_are_recorded_in_one_round_trip(fake, monkeypatch) -> None:
    n = 12
    fake.pipeline.pool.resize(n)
    handle = fake.executor.submit(wide_fan(n, Step(id="w", tool="echo", inputs={"value": 1})))
    local = fake.pipeline._local_lane
    monkeypatch.setattr(fake.pipeline, "_local_lane", lambda ctx, sid: None)  # keep nothing
    fake.pipeline.take(handle.run_id, "dagrelay", 1)
    assert wait_until(lambda: fake.store.all_statuses(handle.run_id)["w0"] == "queued", 5)
    monkeypatch.setattr(fake.pipeline, "_local_lane", local)
    batches: list[Any] = []
    real = fake.store._batch
    monkeypatch.setattr(fake.store, "_batch", lambda cmds: batches.append(cmds) or real(cmds))
    assert wait_until(lambda: fake.pipeline.pool.running() == 0, 5)  # the root's slot is back
    fake.pipeline.take(handle.run_id, "dagrelay", n)
    result = handle.wait(timeout=10)
    assert result.status == "succeeded"
    completes = [
        c for b in batches for c in b if c[0] == "EVALSHA" and c[1] == fake.store._shas["complete"]
    ]
    recorded = [int(c[3 + c[2] + 1]) for c in completes]  # ARGV[2]: how many completions
    assert sum(recorded) >= n + 1  # every leaf, and the join
    assert len(completes) <= 4, f"{len(completes)} round trips to record {n} leaves"


registry = ToolRegistry()
RUNNING: list[int] = [0, 0]  # now, most at once
LOCK = threading.Lock()


@tool(registry=registry)
def busy(seconds: float) -> int:
    with LOCK:
        RUNNING[0] += 1
        RUNNING[1] = max(RUNNING[1], RUNNING[0])
    try:
        time.sleep(seconds)
        return 1
    finally:
        with LOCK:
            RUNNING[0] -= 1


@tool(registry=registry, timeout=0.05)
def hangs(seconds: float) -> int:
    time.sleep(seconds)
    return 1


@pytest.fixture
def own() -> Any:
    """A fake cluster serving this module's tools, 2 sync slots."""
    import fakeredis

    from executor import FlowExecutor
    from tests.support.fakes import fake_worker

    server, broker, pipeline = fake_worker(registry)
    pipeline.pool.resize(2)
    pipeline.start()
    client = fakeredis.FakeRedis(server=server, decode_responses=True)
    ex = FlowExecutor(registry=registry, redis_client=client, broker=broker)
    import dramatiq

    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    RUNNING[:] = [0, 0]
    try:
        yield ex, pipeline
    finally:
        worker.stop()
        pipeline.drain(timeout=5)
        ex.close()


def test_no_more_sync_calls_run_at_once_than_threads_whatever_brings_them(own) -> None:
    ex, _ = own
    steps = [Step(id="root", tool="busy", inputs={"seconds": 0.01})]
    steps += [
        Step(id=f"w{i}", tool="busy", inputs={"seconds": 0.1}, depends_on=["root"])
        for i in range(6)
    ]
    steps += [
        Step(id="each", tool="busy", map="$steps.root", inputs={"seconds": 0.1}),
    ]
    flow = Flow(name="capacity", steps=steps[:-1])
    result = ex.run(flow, timeout=20)
    assert result.status == "succeeded"
    assert RUNNING[1] == 2  # kept, claimed ahead and taken by tokens: two at most


def test_a_sync_call_abandoned_at_its_timeout_gives_its_slot_back_at_once(own) -> None:
    """Issue 17: its thread leaves the pool (counted as abandoned until it returns); the
    slot is free for the next unit at once."""
    ex, pipeline = own
    flow = Flow(name="hang", steps=[Step(id="h", tool="hangs", inputs={"seconds": 0.6})])
    result = ex.run(flow, timeout=10)
    assert result.status == "failed" and "TimeoutError" in str(result.steps["h"].error)
    assert pipeline.pool.running() == 0  # its thread still runs, outside the pool
    threads = pipeline._executor()
    assert threads.abandoned == 1
    assert wait_until(lambda: threads.abandoned == 0, 5)


def test_a_cancel_reaches_a_running_attempt_at_once(fake) -> None:
    fake.start_worker()
    flow = Flow(name="long", steps=[Step(id="s", tool="sleep", inputs={"seconds": 10})])
    handle = fake.executor.submit(flow)
    assert wait_until(lambda: fake.store.all_statuses(handle.run_id)["s"] == "running", 5)
    t0 = time.monotonic()
    handle.cancel()
    result = handle.wait(timeout=5)
    assert time.monotonic() - t0 < 0.5  # not a lease period, not a poll
    assert result.status == "cancelled"
    rec = result.steps["s"]
    assert rec.status == "cancelled" and rec.error is not None
    assert rec.error.type == "CancelledError" and rec.error.message == "the run was cancelled"
    assert rec.attempts[-1].error == rec.error
