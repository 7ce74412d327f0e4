"""Bundles: a fan-out's ready steps go several to a message; each step keeps every
guarantee on its own (claim, lease, run once, one record, cancel).

fakeredis with the `run_step` actor called in this process (see test_distributed.py's
`fake` fixture), so deliveries and their interleavings are forced by hand. The same flows
run on every backend in the conformance suite (test_graph.py, the wide fan-outs).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from executor import Flow, Step
from executor.backends.redis.coordinator import Coordinator
from executor.backends.redis.messages import BUNDLE_MAX, StepMessage
from executor.backends.redis.run_context import RunContext
from tests.conformance.support import wide_fan
from tests.test_distributed import events_of, read_count, wait_until

pytestmark = pytest.mark.timeout(60)


class Capture:
    def __init__(self) -> None:
        self.messages: list[StepMessage] = []

    def send_many(self, messages: list[StepMessage]) -> None:
        self.messages.extend(messages)


def fan(n: int, tool: str = "counted", **inputs: object) -> Flow:
    return wide_fan(n, Step(id="w", tool=tool, inputs=dict(inputs)))


def counted_fan(n: int, tmp_path, seconds: float = 0.0) -> Flow:
    flow = fan(n, seconds=seconds)
    for i, step in enumerate(flow.steps[1:-1]):
        step.inputs["counter"] = str(tmp_path / f"w{i}")
    return flow


def sent(flow: Flow, steps: list[str], attempt: int = 1, delay: int | None = None) -> Capture:
    capture = Capture()
    Coordinator(None, capture).send(  # type: ignore[arg-type]
        RunContext.build("r", flow, {}), steps, attempt, delay
    )
    return capture


def ids(m: StepMessage) -> list[str]:
    return [m.step_id, *m.more]


def test_a_wide_fan_out_goes_in_bundles_each_step_once() -> None:
    flow = fan(1000, tool="echo")
    leaves = [f"w{i}" for i in range(1000)]
    messages = sent(flow, leaves).messages
    every = [s for m in messages for s in ids(m)]
    assert sorted(every) == sorted(leaves)
    assert all(len(ids(m)) <= BUNDLE_MAX for m in messages)
    # Few messages, but enough of them for every worker of a pool to get a share.
    assert 32 <= len(messages) <= 1000 / 8


def test_narrow_fan_outs_retries_and_delays_are_sent_one_step_per_message() -> None:
    flow = fan(1000, tool="echo")
    assert all(not m.more for m in sent(flow, [f"w{i}" for i in range(40)]).messages)
    assert all(not m.more for m in sent(flow, [f"w{i}" for i in range(500)], 2).messages)
    assert all(not m.more for m in sent(flow, [f"w{i}" for i in range(500)], 1, 50).messages)


def test_bundles_hold_only_steps_without_a_time_limit_and_of_one_queue() -> None:
    flow = fan(200, tool="echo")
    for i, step in enumerate(flow.steps[1:-1]):
        if i % 10 == 0:
            step.timeout = 5.0  # the message's Dramatiq time limit would cover the bundle
        elif i % 2:
            step.queue = "other"
    messages = sent(flow, [f"w{i}" for i in range(200)]).messages
    steps = {s.id: s for s in flow.steps}
    for m in messages:
        assert {steps[s].queue or "dagrelay" for s in ids(m)} == {m.queue}
        if m.more:
            assert all(steps[s].timeout is None for s in ids(m)) and m.time_limit_ms is None
    limited = [m for m in messages if m.step_id in {f"w{i}" for i in range(0, 200, 10)}]
    assert len(limited) == 20 and all(not m.more and m.time_limit_ms for m in limited)


def test_a_bundle_delivered_twice_runs_each_tool_once(fake, tmp_path) -> None:
    n = 64
    handle = fake.executor.submit(counted_fan(n, tmp_path))
    fake.runtime.run_step(handle.run_id, "root", 1)  # sends the leaves, in bundles
    leaves = [f"w{i}" for i in range(n)]
    fake.runtime.run_step(handle.run_id, leaves, 1)  # one delivery, by hand
    fake.runtime.run_step(handle.run_id, leaves, 1)  # and again: every claim refused
    assert [read_count(str(tmp_path / s)) for s in leaves] == [1] * n
    fake.start_worker()  # the broker's own bundles come now, after the fact
    result = handle.wait(timeout=20)
    fake.drain()
    assert result.status == "succeeded" and result.output == sum(range(n))
    assert [read_count(str(tmp_path / s)) for s in leaves] == [1] * n
    assert all(len(result.steps[s].attempts) == 1 for s in leaves)
    running = [e["step"] for e in events_of(fake.store, handle.run_id) if e["status"] == "running"]
    assert sorted(running) == sorted(["root", *leaves, "join"])


def test_the_steps_of_one_bundle_run_concurrently_on_one_thread(fake, tmp_path) -> None:
    n, t = 16, 0.3
    handle = fake.executor.submit(counted_fan(n, tmp_path, seconds=t))  # sync sleeps
    fake.runtime.draining = True  # nothing continues in place: the leaves are sent
    fake.runtime.run_step(handle.run_id, "root", 1)
    fake.runtime.draining = False
    queued = [s for s, st in fake.store.all_statuses(handle.run_id).items() if st == "queued"]
    assert len(queued) == n
    t0 = time.monotonic()
    fake.runtime.run_step(handle.run_id, queued, 1)  # one message, one worker thread
    elapsed = time.monotonic() - t0
    assert elapsed < n * t / 3, "a bundle's steps ran one after the other"
    fake.start_worker()
    result = handle.wait(timeout=20)
    assert result.status == "succeeded"
    # Each step is recorded as itself, and they overlapped: every one started before
    # any of them finished.
    recs = [result.steps[s] for s in queued]
    assert all(r.duration is not None and r.duration >= t * 0.9 for r in recs)
    assert max(r.started_at for r in recs) < min(r.finished_at for r in recs)


def test_a_completion_keeps_several_dependents_in_place_while_there_is_room(fake, tmp_path) -> None:
    """The root unlocks 40 leaves: this thread runs as many as the process has room for
    (`DAGRELAY_TOOL_THREADS`, 32 by default) at once, claimed in place; the rest are sent."""
    n, t = 40, 0.3
    handle = fake.executor.submit(counted_fan(n, tmp_path, seconds=t))
    t0 = time.monotonic()
    fake.runtime.run_step(handle.run_id, "root", 1)
    elapsed = time.monotonic() - t0
    statuses = fake.store.all_statuses(handle.run_id)
    here = [f"w{i}" for i in range(n) if statuses[f"w{i}"] == "succeeded"]
    sent = [f"w{i}" for i in range(n) if statuses[f"w{i}"] == "queued"]
    assert len(here) + len(sent) == n
    assert 1 < len(here) <= fake.runtime.settings.tool_threads
    assert elapsed < len(here) * t / 3, "kept steps ran one after the other"
    fake.start_worker()
    result = handle.wait(timeout=20)
    assert result.status == "succeeded" and result.output == sum(range(n))
    assert [read_count(str(tmp_path / f"w{i}")) for i in range(n)] == [1] * n
    worker = result.steps["root"].worker
    assert all(result.steps[s].worker == worker for s in here)
    assert all(result.steps[s].queue_wait is not None for s in here)


def test_a_cancelled_run_stops_every_step_of_a_running_bundle(fake) -> None:
    fake.runtime.monitor.start()  # delivers the stop to running steps
    n = 20
    handle = fake.executor.submit(fan(n, tool="sleep", seconds=30))
    fake.runtime.draining = True  # the leaves are sent, not kept
    fake.runtime.run_step(handle.run_id, "root", 1)
    fake.runtime.draining = False
    queued = [s for s, st in fake.store.all_statuses(handle.run_id).items() if st == "queued"]
    runner = threading.Thread(target=fake.runtime.run_step, args=(handle.run_id, queued, 1))
    runner.start()
    statuses = fake.store.all_statuses
    assert wait_until(lambda: all(statuses(handle.run_id)[s] == "running" for s in queued), 10)
    t0 = time.monotonic()
    handle.cancel()
    runner.join(15)
    assert not runner.is_alive() and time.monotonic() - t0 < 5
    result = handle.wait(timeout=10)
    assert result.status == "cancelled"
    assert all(result.steps[s].status == "cancelled" for s in queued)
    assert all(len(result.steps[s].attempts) == 1 for s in queued)


def test_a_forged_bundle_naming_an_unknown_step_is_dropped(fake, tmp_path) -> None:
    handle = fake.executor.submit(counted_fan(4, tmp_path))
    fake.runtime.draining = True  # the leaves are sent, not kept
    fake.runtime.run_step(handle.run_id, "root", 1)
    fake.runtime.draining = False
    fake.runtime.run_step(handle.run_id, ["w1", "no-such-step"], 1)
    fake.runtime.run_step(handle.run_id, ["w2", 3], 1)  # type: ignore[list-item]
    fake.runtime.run_step(handle.run_id, [], 1)
    assert read_count(str(tmp_path / "w1")) + read_count(str(tmp_path / "w2")) == 0


def test_a_chain_continued_in_place_costs_one_store_round_trip_a_hop(fake, monkeypatch) -> None:
    """The completion of a step and the claim of the next share a round trip."""
    n = 30
    steps = [Step(id="s0", tool="add", inputs={"a": 0, "b": 1})]
    steps += [
        Step(id=f"s{i}", tool="add", inputs={"a": f"$steps.s{i - 1}", "b": 1}) for i in range(1, n)
    ]
    handle = fake.executor.submit(Flow(name="chain", steps=steps, output=f"$steps.s{n - 1}"))
    batches = []
    real = fake.store._batch
    monkeypatch.setattr(fake.store, "_batch", lambda cmds: batches.append(cmds) or real(cmds))
    fake.runtime.run_step(handle.run_id, "s0", 1)  # the whole chain, on this thread
    result = handle.wait(timeout=10)
    assert result.status == "succeeded" and result.output == n
    scripts = [c for cmds in batches for c in cmds if c[0] == "EVALSHA"]
    assert len(batches) <= n + 3, f"{len(batches)} round trips for {n} hops"
    assert len(scripts) <= n + 3, f"{len(scripts)} scripts for {n} hops"  # one script a hop
    # Yet every step was claimed on its own: queued (s0 by the client, the others in
    # place) and running, once each.
    events = fake.store.client.xrange(fake.store.keys(handle.run_id)[7])
    for status in ("queued", "running"):
        seen = sorted(f["step"] for _, f in events if f["status"] == status)
        assert seen == sorted(f"s{i}" for i in range(n))
    # Lease hints of finished steps went with later completions: none left for the
    # sweeper but the last step's (dropped with this thread's next claim or completion).
    hints = fake.store.client.zrange(fake.store.leases_key, 0, -1)
    assert len([h for h in hints if h.startswith(handle.run_id)]) <= 1
    # Every step recorded as itself, one attempt, in order.
    for i in range(1, n):
        rec = result.steps[f"s{i}"]
        assert [a.number for a in rec.attempts] == [1]
        assert rec.started_at >= result.steps[f"s{i - 1}"].finished_at


def test_steps_of_a_bundle_that_end_together_are_recorded_in_one_round_trip(
    fake, monkeypatch
) -> None:
    n = 16
    handle = fake.executor.submit(fan(n, tool="sleep", seconds=0))
    fake.runtime.draining = True  # the leaves are sent, not kept
    fake.runtime.run_step(handle.run_id, "root", 1)
    fake.runtime.draining = False
    leaves = [f"w{i}" for i in range(n)]
    batches: list[list[tuple[object, ...]]] = []
    real = fake.store._batch
    monkeypatch.setattr(fake.store, "_batch", lambda cmds: batches.append(cmds) or real(cmds))
    fake.runtime.run_step(handle.run_id, leaves, 1)
    # One complete script per round trip, each recording several steps (its first
    # argument after the keys says how many).
    per_trip = [
        [c for c in b if c[0] == "EVALSHA" and c[1] == fake.store._shas["complete"]]
        for b in batches
    ]
    completes = [scripts for scripts in per_trip if scripts]
    assert all(len(scripts) == 1 for scripts in completes)
    recorded = sum(int(c[3 + c[2]]) for scripts in completes for c in scripts)
    assert recorded >= n  # every leaf recorded (and the join, run in place, too)
    assert len(completes) <= 4, f"{len(completes)} round trips to record {n} leaves"
    fake.start_worker()
    result = handle.wait(timeout=20)
    assert result.status == "succeeded" and result.output == sum(range(n))
    assert all(len(result.steps[s].attempts) == 1 for s in leaves)


def test_a_completion_refused_after_a_takeover_leaves_the_new_holders_lease_hint(fake) -> None:
    from executor.backends.redis.claims import Terminal
    from executor.backends.redis.coordinator import now_iso

    handle = fake.executor.submit(Flow(name="one", steps=[Step(id="a", tool="echo")]))
    run_id, store = handle.run_id, fake.store
    old = store.claim(run_id, "a", 1, "old", 1, now_iso(), "old-worker", ())
    time.sleep(0.01)  # its lease (1 ms) expires: the next delivery takes over
    new = store.claim(run_id, "a", 1, "new", 60_000, now_iso(), "new-worker", ())
    assert (old.kind, old.attempt, new.kind, new.attempt) == ("ok", 1, "ok", 2)
    fake.runtime._take_drops()
    ctx = fake.runtime.coordinator.context(run_id)
    late = Terminal("a", "succeeded", "1", {}, now_iso(), "old-worker", 1, "", "")
    assert fake.runtime._complete(ctx, [(late, 1, ())], None) == [[]]
    assert store.all_statuses(run_id)["a"] == "running"  # the old attempt wrote nothing
    assert f"{run_id}|a" not in fake.runtime._take_drops()
    assert store.client.zscore(store.leases_key, f"{run_id}|a") is not None


def test_a_step_stopped_while_its_group_commit_waits_leaves_the_commit_whole(fake) -> None:
    """A run's stop cancels a step task that waits for its group commit: the commit still
    records every step and wakes the others (a done future must not break it)."""
    from executor.backends.redis.claims import Terminal
    from executor.backends.redis.coordinator import now_iso
    from workers.bundles import _Drive

    flow = Flow(name="two", steps=[Step(id="a", tool="echo"), Step(id="b", tool="echo")])
    handle = fake.executor.submit(flow)
    run_id, store = handle.run_id, fake.store
    for sid in ("a", "b"):
        assert store.claim(run_id, sid, 1, "t", 60_000, now_iso(), "w", ()).kind == "ok"
    ctx = fake.runtime.coordinator.context(run_id)
    loop = asyncio.new_event_loop()
    try:
        drive = _Drive(fake.runtime, ctx, None, loop)
        ended = [
            (Terminal(s, "succeeded", "1", {}, now_iso(), "w", 1, "", ""), 1, ()) for s in "ab"
        ]
        first, second = drive.record(ended[0]), drive.record(ended[1])
        first.cancel()  # what cancelling the task that awaits it does to it
        loop.run_until_complete(asyncio.sleep(0))  # one turn: the flush
    finally:
        loop.close()
    assert second.done() and drive.idle.done() and not drive.errors
    assert {s: store.all_statuses(run_id)[s] for s in "ab"} == {"a": "succeeded", "b": "succeeded"}
