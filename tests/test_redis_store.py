"""The run-state store on fakeredis (Lua scripts included): claim, complete, stop, finish,
reclaim and the tool semaphore, one transition at a time.

Leases are made short (tens of milliseconds) and expired with `time.sleep`.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest

from executor.backends.redis.claims import Claim, Completion, NextClaim
from executor.backends.redis.store import KEY_NAMES, RedisStore

LONG_LEASE = 60_000  # ms: never expires during a test
SHORT_LEASE = 40  # ms


def now() -> str:
    return datetime.now(UTC).isoformat()


@pytest.fixture
def store() -> RedisStore:
    return RedisStore(fakeredis.FakeRedis(decode_responses=True), result_ttl=3600)


def new_run(store: RedisStore, deps: dict[str, list[str]]) -> str:
    """A running run whose steps are the keys of `deps` (each mapped to what it needs)."""
    run_id = uuid.uuid4().hex
    meta = {"status": "running", "flow_name": "t", "started_at": now(), "flow": "{}"}
    store.create_run(run_id, meta, list(deps), {s: len(d) for s, d in deps.items()}, None)
    return run_id


def claim(
    store: RedisStore,
    run_id: str,
    step: str,
    attempt: int = 1,
    lease_ms: int = LONG_LEASE,
    worker: str = "w1",
    needs: tuple[str, ...] = (),
    semaphore: tuple[str, int] | None = None,
) -> Claim:
    return store.claim(
        run_id, step, attempt, uuid.uuid4().hex[:8], lease_ms, now(), worker, needs, semaphore
    )


def complete(
    store: RedisStore,
    run_id: str,
    step: str,
    status: str = "succeeded",
    output: Any = None,
    dependents: tuple[str, ...] = (),
    attempt: int | None = 1,
) -> Completion:
    return store.complete(
        run_id,
        step,
        status,
        json.dumps(output) if status == "succeeded" else "",
        {"status": status, "worker": "w1"},
        now(),
        "w1",
        attempt,
        json.dumps({"number": attempt, "started_at": now()}) if attempt else "",
        "",
        dependents,
    )


def key(store: RedisStore, run_id: str, name: str) -> str:
    return store.keys(run_id)[KEY_NAMES.index(name)]


def snapshot(store: RedisStore, run_id: str) -> dict[str, Any]:
    """Every key of the run with its full content (streams as entry lists)."""
    c = store.client
    out: dict[str, Any] = {}
    for k in store.keys(run_id):
        kind = c.type(k)
        if kind == "hash":
            out[k] = c.hgetall(k)
        elif kind == "stream":
            out[k] = c.xrange(k)
        elif kind != "none":
            out[k] = (kind, c.dump(k))
    return out


def test_create_run_writes_every_step_pending_and_refuses_a_duplicate_id(store):
    run_id = new_run(store, {"a": [], "b": ["a"]})
    assert store.all_statuses(run_id) == {"a": "pending", "b": "pending"}
    assert store.client.hget(key(store, run_id, "remaining"), "b") == "1"
    assert store.run_meta(run_id, "unfinished") == {"unfinished": "2"}
    with pytest.raises(ValueError, match="exists already"):
        store.create_run(run_id, {"status": "running"}, ["a"], {"a": 0}, None)


def test_every_key_of_a_run_shares_one_hash_tag(store):
    run_id = new_run(store, {"a": []})
    keys = store.keys(run_id)
    assert len(keys) == len(KEY_NAMES) == len(set(keys))
    for k in keys:
        assert k.startswith(f"dagrelay:{{{run_id}}}:")
        # The hash tag is the text between the first '{' and the next '}'.
        assert k[k.index("{") + 1 : k.index("}")] == run_id


# claim ---------------------------------------------------------------------------------
def test_claim_of_a_queued_step_starts_attempt_one_and_returns_needed_outputs(store):
    run_id = new_run(store, {"a": [], "b": ["a"]})
    assert store.mark_queued(run_id, ["a"], now()) == ["a"]
    assert claim(store, run_id, "a").kind == "ok"
    complete(store, run_id, "a", output={"x": 1}, dependents=("b",))
    store.mark_queued(run_id, ["b"], now())
    c = claim(store, run_id, "b", needs=("a",), worker="w2")
    assert c.kind == "ok" and c.attempt == 1 and c.lost_attempt == 0
    assert c.outputs == {"a": {"x": 1}}
    assert c.queued_at is not None and c.started_at is not None
    assert store.all_statuses(run_id)["b"] == "running"
    att = json.loads(store.client.hget(key(store, run_id, "att"), "b:1"))
    assert att["worker"] == "w2" and att["number"] == 1


def test_queueing_a_wide_fan_out_moves_each_pending_step_once_with_its_event(store):
    # Read and written a chunk at a time: the chunks must not lose or repeat a step.
    n = 2500
    steps = [f"s{i}" for i in range(n)]
    run_id = new_run(store, {s: [] for s in steps})
    store.mark_queued(run_id, steps[:10], now())  # queued before: sent again, not moved
    assert claim(store, run_id, "s0").kind == "ok"  # running: neither
    events = store.client.xlen(key(store, run_id, "events"))
    at = now()
    sent = store.mark_queued(run_id, steps, at)
    assert sorted(sent) == sorted(steps[1:])
    statuses = store.all_statuses(run_id)
    assert statuses["s0"] == "running"
    assert all(statuses[s] == "queued" for s in steps[1:])
    assert store.client.xlen(key(store, run_id, "events")) == events + n - 10
    times = store.client.hgetall(key(store, run_id, "times"))
    assert all(times[f"{s}:q"] == at for s in steps[10:])


def test_a_claim_returns_every_output_it_needs_in_order_however_many(store):
    # Outputs are read in chunks: Lua's unpack() cannot spread ~8,000 arguments at once.
    n = 9000
    outputs = {f"a{i}": (i if i % 7 else None) for i in range(n)}
    run_id = new_run(store, {**{s: [] for s in outputs}, "b": []})
    store.client.hset(
        key(store, run_id, "out"), mapping={s: json.dumps(v) for s, v in outputs.items()}
    )
    store.mark_queued(run_id, ["b"], now())
    c = claim(store, run_id, "b", needs=(*outputs, "missing"))
    assert c.kind == "ok"
    assert c.outputs == outputs


def test_a_duplicate_claim_while_the_lease_lives_is_busy(store):
    run_id = new_run(store, {"a": []})
    store.mark_queued(run_id, ["a"], now())
    assert claim(store, run_id, "a").kind == "ok"
    events = store.client.xlen(key(store, run_id, "events"))
    dup = claim(store, run_id, "a", worker="w2")
    assert dup.kind == "busy"
    assert dup.detail == "1"
    # Nothing changed: no new event, the first holder's attempt record is intact.
    assert store.client.xlen(key(store, run_id, "events")) == events
    assert json.loads(store.client.hget(key(store, run_id, "att"), "a:1"))["worker"] == "w1"
    assert store.client.hget(key(store, run_id, "att"), "a:2") is None


@pytest.mark.parametrize("status", ["succeeded", "failed", "skipped", "cancelled"])
def test_claim_of_a_terminal_step_is_done(store, status):
    run_id = new_run(store, {"a": []})
    store.mark_queued(run_id, ["a"], now())
    assert claim(store, run_id, "a").kind == "ok"
    assert complete(store, run_id, "a", status=status).applied
    for attempt in (1, 2):
        c = claim(store, run_id, "a", attempt=attempt)
        assert c.kind == "done" and c.detail == status
    assert store.all_statuses(run_id)["a"] == status


def test_claim_of_an_unknown_step_is_missing(store):
    run_id = new_run(store, {"a": []})
    assert claim(store, run_id, "nope").kind == "missing"
    assert claim(store, uuid.uuid4().hex, "a").kind == "missing"


def test_claim_with_a_stale_attempt_number_is_refused(store):
    run_id = new_run(store, {"a": []})
    store.mark_queued(run_id, ["a"], now())
    # Queued for attempt 1: a message for attempt 2 is not this step's current one.
    assert claim(store, run_id, "a", attempt=2).kind == "stale"
    first = claim(store, run_id, "a", attempt=1)
    assert first.kind == "ok" and first.attempt == 1
    assert store.retry(run_id, "a", 1, json.dumps({"number": 1}), now(), "w1", "boom")
    assert store.all_statuses(run_id)["a"] == "queued"
    # Queued again for attempt 2: a late duplicate of the attempt-1 message is stale.
    stale = claim(store, run_id, "a", attempt=1)
    assert stale.kind == "stale" and stale.detail == "2"
    second = claim(store, run_id, "a", attempt=2)
    assert second.kind == "ok" and second.attempt == 2


def test_a_stale_message_cannot_take_over_an_expired_lease(store):
    run_id = new_run(store, {"a": []})
    store.mark_queued(run_id, ["a"], now())
    assert claim(store, run_id, "a", attempt=1).kind == "ok"
    store.retry(run_id, "a", 1, json.dumps({"number": 1}), now(), "w1", "boom")
    assert claim(store, run_id, "a", attempt=2, lease_ms=SHORT_LEASE).kind == "ok"
    time.sleep(3 * SHORT_LEASE / 1000)
    # The lease of attempt 2 expired, but a message for attempt 1 is older than it.
    assert claim(store, run_id, "a", attempt=1).kind == "stale"
    assert store.all_statuses(run_id)["a"] == "running"


def test_a_redelivery_after_the_lease_expired_takes_over_with_the_next_attempt(store):
    run_id = new_run(store, {"a": []})
    store.mark_queued(run_id, ["a"], now())
    assert claim(store, run_id, "a", lease_ms=SHORT_LEASE, worker="dead").kind == "ok"
    time.sleep(3 * SHORT_LEASE / 1000)
    c = claim(store, run_id, "a", attempt=1, worker="alive")
    assert c.kind == "ok" and c.attempt == 2 and c.lost_attempt == 1
    lost = json.loads(store.client.hget(key(store, run_id, "att"), "a:1"))
    assert lost["error"]["type"] == "WorkerLost" and lost["finished_at"]
    assert json.loads(store.client.hget(key(store, run_id, "att"), "a:2"))["worker"] == "alive"


def test_claim_in_a_stopped_run_is_refused(store):
    run_id = new_run(store, {"a": [], "b": []})
    store.mark_queued(run_id, ["a", "b"], now())
    assert claim(store, run_id, "a", lease_ms=SHORT_LEASE).kind == "ok"
    store.stop(run_id, "cancelled", now())
    time.sleep(3 * SHORT_LEASE / 1000)
    # b was cancelled by the stop; a's expired lease cannot be taken over any more.
    assert claim(store, run_id, "b").kind == "done"
    assert claim(store, run_id, "a").kind == "stopped"


# complete ------------------------------------------------------------------------------
def test_completing_twice_changes_nothing_the_second_time(store):
    run_id = new_run(store, {"a": [], "b": ["a"], "c": ["a"]})
    store.mark_queued(run_id, ["a"], now())
    claim(store, run_id, "a")
    first = complete(store, run_id, "a", output=1, dependents=("b", "c"))
    assert first.applied and first.unfinished == 2 and set(first.ready) == {"b", "c"}
    before = snapshot(store, run_id)
    for status, output in (("succeeded", 1), ("succeeded", 99), ("failed", None)):
        again = complete(store, run_id, "a", status=status, output=output, dependents=("b", "c"))
        assert again == Completion(False)
    assert snapshot(store, run_id) == before
    assert store.client.hget(key(store, run_id, "remaining"), "b") == "0"
    assert store.run_meta(run_id, "unfinished")["unfinished"] == "2"
    assert store.all_outputs(run_id) == {"a": 1}


def test_complete_of_an_unknown_step_or_run_is_not_applied_and_writes_nothing(store):
    run_id = new_run(store, {"a": []})
    before = snapshot(store, run_id)
    assert not complete(store, run_id, "zz").applied
    assert snapshot(store, run_id) == before
    ghost = uuid.uuid4().hex
    assert not complete(store, ghost, "a").applied
    assert snapshot(store, ghost) == {}


def test_complete_releases_a_dependent_once_when_its_last_dependency_finishes(store):
    # d needs a, b and c; e needs only c.
    run_id = new_run(store, {"a": [], "b": [], "c": [], "d": ["a", "b", "c"], "e": ["c"]})
    store.mark_queued(run_id, ["a", "b", "c"], now())
    for s in "abc":
        claim(store, run_id, s)
    ra = complete(store, run_id, "a", output=1, dependents=("d",))
    assert ra.applied and ra.ready == ()
    rb = complete(store, run_id, "b", status="failed", dependents=("d",))
    assert rb.applied and rb.ready == ()
    # A duplicate of a's completion must not count as a second dependency finishing.
    assert not complete(store, run_id, "a", output=1, dependents=("d",)).applied
    assert store.client.hget(key(store, run_id, "remaining"), "d") == "1"
    rc = complete(store, run_id, "c", output=3, dependents=("d", "e"))
    assert rc.applied and sorted(rc.ready) == ["d", "e"]
    # e's only dependency succeeded: said so, no statuses to read; d's b failed.
    assert rc.clean == {"e"}
    assert rc.unfinished == 2
    assert not complete(store, run_id, "c", output=3, dependents=("d", "e")).applied
    assert store.client.hget(key(store, run_id, "remaining"), "d") == "0"


def test_a_dependent_that_is_no_longer_pending_is_not_released(store):
    run_id = new_run(store, {"a": [], "b": ["a"]})
    store.mark_queued(run_id, ["a"], now())
    claim(store, run_id, "a")
    # b was decided by someone else already (e.g. recorded cancelled).
    assert complete(store, run_id, "b", status="cancelled", attempt=None).applied
    done = complete(store, run_id, "a", output=1, dependents=("b",))
    assert done.applied and done.ready == () and done.unfinished == 0


def test_complete_records_status_output_record_and_attempt_and_clears_the_claim(store):
    run_id = new_run(store, {"a": []})
    store.mark_queued(run_id, ["a"], now())
    claim(store, run_id, "a")
    events = store.client.xlen(key(store, run_id, "events"))
    complete(store, run_id, "a", output={"v": [1, 2]})
    data = store.read_run(run_id)
    assert data.status == {"a": "succeeded"}
    assert json.loads(data.outputs["a"]) == {"v": [1, 2]}
    assert json.loads(data.records["a"])["status"] == "succeeded"
    assert json.loads(data.attempts["a:1"])["number"] == 1
    assert store.client.hget(key(store, run_id, "claims"), "a") is None
    assert store.client.xlen(key(store, run_id, "events")) == events + 1
    assert store.run_meta(run_id, "unfinished")["unfinished"] == "0"


# stop ----------------------------------------------------------------------------------
def test_stop_cancels_what_has_not_started_and_returns_running_steps(store):
    run_id = new_run(store, {"a": [], "b": [], "c": [], "d": ["a"], "e": []})
    store.mark_queued(run_id, ["a", "b", "c", "e"], now())
    claim(store, run_id, "a")
    claim(store, run_id, "b")
    complete(store, run_id, "e", output=5)
    stopped, unfinished, running = store.stop(run_id, "cancelled", now())
    assert stopped
    assert sorted(running) == ["a", "b"]
    assert unfinished == 2  # a and b still have to report
    assert store.all_statuses(run_id) == {
        "a": "running",
        "b": "running",
        "c": "cancelled",  # was queued
        "d": "cancelled",  # was pending
        "e": "succeeded",  # already terminal: untouched
    }
    assert store.run_meta(run_id, "stop")["stop"] == "cancelled"
    # Stopping again does nothing; nothing new can be queued; completions release nobody.
    assert store.stop(run_id, "timed_out", now()) == (False, -1, [])
    assert store.run_meta(run_id, "stop")["stop"] == "cancelled"
    assert store.mark_queued(run_id, ["d"], now()) == []
    done = complete(store, run_id, "a", output=1, dependents=("d",))
    assert done.applied and done.stop == "cancelled" and done.ready == ()
    assert complete(store, run_id, "b", status="cancelled").unfinished == 0


def test_stop_with_nothing_running_leaves_nothing_unfinished(store):
    run_id = new_run(store, {"a": [], "b": ["a"]})
    store.mark_queued(run_id, ["a"], now())
    assert store.stop(run_id, "timed_out", now()) == (True, 0, [])


# finish --------------------------------------------------------------------------------
def run_to_the_end(store: RedisStore) -> str:
    run_id = new_run(store, {"a": [], "b": ["a"]})
    store.mark_queued(run_id, ["a"], now())
    claim(store, run_id, "a")
    assert store.retry(run_id, "a", 1, json.dumps({"number": 1}), now(), "w1", "boom")
    claim(store, run_id, "a", attempt=2)
    complete(store, run_id, "a", output=1, dependents=("b",), attempt=2)
    store.mark_queued(run_id, ["b"], now())
    claim(store, run_id, "b", needs=("a",))
    assert complete(store, run_id, "b", output=2).unfinished == 0
    return run_id


def test_finish_writes_once_and_gives_every_key_of_the_run_its_ttl(store):
    run_id = run_to_the_end(store)
    c = store.client
    existing = [k for k in store.keys(run_id) if c.exists(k)]
    assert {key(store, run_id, n) for n in ("meta", "status", "out", "rec", "att", "events")} <= (
        set(existing)
    )
    assert all(c.ttl(k) == -1 for k in existing)  # no TTL while it runs
    assert store.finish(run_id, "succeeded", now(), "2", "", 1.5)
    meta = store.run_meta(run_id, "status", "output", "wall_time")
    assert meta == {"status": "succeeded", "output": "2", "wall_time": "1.5"}
    # Every key of the run (found by its hash tag, not from our own list) has the TTL.
    found = sorted(c.scan_iter(match=f"dagrelay:{{{run_id}}}:*"))
    assert found == sorted([*existing, key(store, run_id, "end")])
    assert [e[1] for e in c.xrange(key(store, run_id, "end"))] == [{"status": "succeeded"}]
    assert store.wait_end(run_id, None)
    for k in found:
        assert 3500 < c.ttl(k) <= 3600, k
    events = c.xlen(key(store, run_id, "events"))
    last = c.xrevrange(key(store, run_id, "events"), count=1)[0][1]
    assert last["step"] == "" and last["status"] == "succeeded"
    # A second finish (any status) changes nothing.
    before = snapshot(store, run_id)
    assert not store.finish(run_id, "failed", now(), "", "late", 9.0)
    assert snapshot(store, run_id) == before
    assert c.xlen(key(store, run_id, "events")) == events
    assert c.xlen(key(store, run_id, "end")) == 1


def test_finish_removes_the_deadline_hint(store):
    run_id = uuid.uuid4().hex
    store.create_run(
        run_id, {"status": "running", "started_at": now()}, ["a"], {"a": 0}, time.time() - 1
    )
    assert store.overdue_runs(time.time()) == [run_id]
    store.finish(run_id, "timed_out", now(), "", "too slow", 1.0)
    assert store.overdue_runs(time.time()) == []


# reclaim -------------------------------------------------------------------------------
def test_reclaim_of_a_live_lease_does_nothing(store):
    run_id = new_run(store, {"a": []})
    store.mark_queued(run_id, ["a"], now())
    claim(store, run_id, "a")
    before = snapshot(store, run_id)
    assert store.reclaim(run_id, "a", now()) == (0, 0)
    assert store.reclaim(run_id, "zz", now()) == (0, 0)
    assert snapshot(store, run_id) == before


def test_reclaim_of_an_expired_lease_requeues_with_the_next_attempt(store):
    run_id = new_run(store, {"a": []})
    store.mark_queued(run_id, ["a"], now())
    claim(store, run_id, "a", lease_ms=SHORT_LEASE, worker="dead")
    time.sleep(3 * SHORT_LEASE / 1000)
    assert store.reclaim(run_id, "a", now()) == (1, 2)
    assert store.all_statuses(run_id)["a"] == "queued"
    lost = json.loads(store.client.hget(key(store, run_id, "att"), "a:1"))
    assert lost["error"]["type"] == "WorkerLost"
    assert lost["finished_at"] and lost["worker"] == "dead"
    last = store.client.xrevrange(key(store, run_id, "events"), count=1)[0][1]
    assert last["status"] == "requeued" and last["attempt"] == "1"
    # Once is enough: a second sweeper finds nothing to do.
    assert store.reclaim(run_id, "a", now()) == (0, 0)
    # The re-sent attempt 2 is the one that runs; the original message is stale.
    assert claim(store, run_id, "a", attempt=1).kind == "stale"
    again = claim(store, run_id, "a", attempt=2, worker="alive")
    assert again.kind == "ok" and again.attempt == 2 and again.lost_attempt == 0


def test_reclaim_in_a_stopping_run_reports_the_lost_attempt(store):
    run_id = new_run(store, {"a": []})
    store.mark_queued(run_id, ["a"], now())
    claim(store, run_id, "a", lease_ms=SHORT_LEASE)
    assert store.stop(run_id, "cancelled", now()) == (True, 1, ["a"])
    time.sleep(3 * SHORT_LEASE / 1000)
    assert store.reclaim(run_id, "a", now()) == (2, 1)
    assert store.all_statuses(run_id)["a"] == "running"  # the caller records it cancelled


def test_renew_keeps_a_lease_alive_only_for_its_own_attempt(store):
    run_id = new_run(store, {"a": []})
    store.mark_queued(run_id, ["a"], now())
    claim(store, run_id, "a", lease_ms=SHORT_LEASE * 2)
    assert store.renew(run_id, "a", 2, LONG_LEASE) == (False, "")
    for _ in range(5):
        time.sleep(SHORT_LEASE / 1000)
        assert store.renew(run_id, "a", 1, SHORT_LEASE * 2) == (True, "")
    assert store.reclaim(run_id, "a", now()) == (0, 0)
    assert claim(store, run_id, "a").kind == "busy"
    store.stop(run_id, "cancelled", now())
    assert store.renew(run_id, "a", 1, SHORT_LEASE * 2) == (True, "cancelled")


# the tool semaphore ----------------------------------------------------------------------
def test_semaphore_is_full_at_the_limit_and_a_released_slot_is_reusable(store):
    run_id = new_run(store, {"a": [], "b": [], "c": []})
    store.mark_queued(run_id, ["a", "b", "c"], now())
    sem = ("limited", 2)
    a = claim(store, run_id, "a", semaphore=sem)
    assert a.kind == "ok" and a.slot is not None
    assert claim(store, run_id, "b", semaphore=sem).kind == "ok"
    before = snapshot(store, run_id)
    assert claim(store, run_id, "c", semaphore=sem).kind == "full"
    assert snapshot(store, run_id) == before  # still queued, no event, no attempt
    assert store.all_statuses(run_id)["c"] == "queued"
    # Another run's step competes for the same cluster-wide slots.
    other = new_run(store, {"x": []})
    store.mark_queued(other, ["x"], now())
    assert claim(store, other, "x", semaphore=sem).kind == "full"
    # Without a semaphore (another tool) the limit does not apply.
    assert claim(store, other, "x").kind == "ok"
    store.release_slot("limited", a.slot)
    assert claim(store, run_id, "c", semaphore=sem).kind == "ok"
    assert store.client.zcard(store.semaphore_key("limited")) == 2


def test_a_refused_claim_gives_its_slot_back_and_leaves_the_holders(store):
    run_id = new_run(store, {"a": [], "b": []})
    store.mark_queued(run_id, ["a", "b"], now())
    sem = ("limited", 2)
    held = claim(store, run_id, "a", semaphore=sem)
    assert held.kind == "ok"
    # A duplicate of a's message while a runs: busy, and a keeps its slot.
    assert claim(store, run_id, "a", semaphore=sem, worker="w2").kind == "busy"
    assert store.client.zrange(store.semaphore_key("limited"), 0, -1) == [held.slot]
    complete(store, run_id, "a", output=1)
    # A late duplicate of a finished step takes no slot either.
    assert claim(store, run_id, "a", semaphore=sem).kind == "done"
    assert store.client.zrange(store.semaphore_key("limited"), 0, -1) == [held.slot]


def test_with_every_slot_taken_a_message_with_nothing_to_run_is_not_sent_back(store):
    run_id = new_run(store, {"a": [], "b": [], "c": []})
    store.mark_queued(run_id, ["a", "b", "c"], now())
    sem = ("limited", 1)
    assert claim(store, run_id, "a", semaphore=sem).kind == "ok"
    assert claim(store, run_id, "b", semaphore=sem).kind == "full"  # comes back later
    store.stop(run_id, "cancelled", now())
    # b and c were cancelled while queued: their messages are done, not `full`.
    assert claim(store, run_id, "b", semaphore=sem).kind == "done"
    assert claim(store, run_id, "c", semaphore=sem).kind == "done"


def test_a_crashed_holder_cannot_leak_its_slot(store):
    run_id = new_run(store, {"a": [], "b": []})
    store.mark_queued(run_id, ["a", "b"], now())
    sem = ("limited", 1)
    assert claim(store, run_id, "a", lease_ms=SHORT_LEASE, semaphore=sem).kind == "ok"
    assert claim(store, run_id, "b", semaphore=sem).kind == "full"
    time.sleep(3 * SHORT_LEASE / 1000)  # a's worker died: nobody renews or releases
    b = claim(store, run_id, "b", semaphore=sem)
    assert b.kind == "ok"
    assert store.client.zrange(store.semaphore_key("limited"), 0, -1) == [b.slot]


def test_a_renewed_slot_outlives_the_semaphore_keys_initial_ttl(store):
    """A holder that keeps renewing keeps its slot however long it runs."""
    run_id = new_run(store, {"a": [], "b": []})
    store.mark_queued(run_id, ["a", "b"], now())
    sem = ("limited", 1)
    lease = 100
    a = claim(store, run_id, "a", lease_ms=lease, semaphore=sem)
    assert a.kind == "ok" and a.slot is not None
    deadline = time.monotonic() + 5 * lease / 1000
    while time.monotonic() < deadline:  # what the monitor does, every third of a lease
        time.sleep(lease / 3000)
        store.renew(run_id, "a", 1, lease)
        store.renew_slots([("limited", a.slot)], lease)
    assert claim(store, run_id, "b", semaphore=sem).kind == "full"


def test_the_ttl_is_the_run_creators_whichever_process_finishes_it(store):
    run_id = new_run(store, {"a": []})  # created with result_ttl=3600
    worker_side = RedisStore(store.client, result_ttl=99)
    store.mark_queued(run_id, ["a"], now())
    claim(worker_side, run_id, "a")
    complete(worker_side, run_id, "a", output=1)
    assert worker_side.finish(run_id, "succeeded", now(), "1", "", 0.1)
    for k in store.client.scan_iter(match=f"dagrelay:{{{run_id}}}:*"):
        assert 3500 < store.client.ttl(k) <= 3600, k


def test_an_attempt_taken_over_cannot_record_over_the_new_holder(store):
    """A slow worker whose lease expired finishes after another took over: its result is
    not recorded; the attempt holding the claim records the step once."""
    run_id = new_run(store, {"a": []})
    store.mark_queued(run_id, ["a"], now())
    assert claim(store, run_id, "a", lease_ms=SHORT_LEASE).attempt == 1
    time.sleep(3 * SHORT_LEASE / 1000)
    takeover = claim(store, run_id, "a", attempt=1, worker="w2")  # the redelivered message
    assert takeover.kind == "ok" and takeover.attempt == 2 and takeover.lost_attempt == 1
    assert not complete(store, run_id, "a", output="stale", attempt=1).applied
    assert store.all_statuses(run_id)["a"] == "running"
    assert complete(store, run_id, "a", output="fresh", attempt=2).applied
    assert store.all_outputs(run_id) == {"a": "fresh"}


def test_list_runs_skips_expired_runs_and_forgets_them(store):
    ids = [new_run(store, {"a": []}) for _ in range(5)]
    for rid in ids[2:]:  # the three newest expire (results gone)
        for k in store.keys(rid):
            store.client.delete(k)
    runs = store.list_runs(limit=2)
    assert [rid for rid, _ in runs] == [ids[1], ids[0]]
    assert set(store.client.zrange(store.runs_key, 0, -1)) == set(ids[:2])


def test_scripts_forgotten_by_redis_are_loaded_again(store):
    """A restarted Redis has no scripts: the batch reloads them and runs once more."""
    run_id = new_run(store, {"a": []})
    store.mark_queued(run_id, ["a"], now())
    store.client.script_flush()
    assert claim(store, run_id, "a").kind == "ok"
    store.client.script_flush()
    assert complete(store, run_id, "a", output=1).applied
    assert store.all_outputs(run_id) == {"a": 1}


def test_mark_queued_called_again_still_returns_what_it_queued(store):
    """A retried call whose first reply was lost must still send its messages; a step
    queued for a retry (attempt 2) or running is not sent again."""
    run_id = new_run(store, {"a": [], "b": [], "c": []})
    assert store.mark_queued(run_id, ["a", "b", "c"], now()) == ["a", "b", "c"]
    assert claim(store, run_id, "b").kind == "ok"  # running now
    assert claim(store, run_id, "c").kind == "ok"
    assert store.retry(run_id, "c", 1, json.dumps({"number": 1}), now(), "w1", "boom")
    assert store.mark_queued(run_id, ["a", "b", "c"], now()) == ["a"]


def test_renew_many_extends_held_leases_and_reports_stops(store):
    run_id = new_run(store, {"a": [], "b": []})
    store.mark_queued(run_id, ["a", "b"], now())
    assert claim(store, run_id, "a", lease_ms=SHORT_LEASE).kind == "ok"
    assert claim(store, run_id, "b", lease_ms=SHORT_LEASE).kind == "ok"
    assert store.renew_many([(run_id, "a", 1), (run_id, "b", 2)], 10_000) == [
        (True, ""),
        (False, ""),  # attempt 2 holds nothing
    ]
    time.sleep(3 * SHORT_LEASE / 1000)
    assert claim(store, run_id, "a", worker="w2").kind == "busy"  # renewed: still held
    assert claim(store, run_id, "b", worker="w2").attempt == 2  # not renewed: taken over
    store.stop(run_id, "cancelled", now())
    assert store.renew_many([(run_id, "a", 1)], 10_000) == [(True, "cancelled")]


def test_a_completion_can_claim_dependents_it_makes_ready_in_the_same_round_trip(store):
    run_id = new_run(store, {"a": [], "b": ["a"], "c": ["a", "x"], "x": [], "d": ["x"]})
    store.mark_queued(run_id, ["a", "x"], now())
    claim(store, run_id, "a")
    claim(store, run_id, "x")

    def ahead(step: str, *needs: str) -> NextClaim:
        return NextClaim(step, uuid.uuid4().hex[:8], LONG_LEASE, now(), "w1", needs)

    def finish(step: str, status: str, output: str, deps: tuple[str, ...], *then: NextClaim):
        return store.complete(run_id, step, status, output, {}, now(), "w1", 1, "", "", deps, then)

    done = finish("a", "succeeded", "7", ("b", "c"), ahead("b", "a"), ahead("c", "a", "x"))
    assert done.applied and done.ready == ("b",)
    # b is ready and taken, with a's output; c still waits for x: refused, still pending.
    assert [c.kind for c in done.then] == ["ok", "unready"]
    assert done.then[0].attempt == 1 and done.then[0].outputs == {"a": 7}
    assert store.all_statuses(run_id)["b"] == "running"
    assert store.all_statuses(run_id)["c"] == "pending"
    stream = store.client.xrange(key(store, run_id, "events"))
    assert [f["status"] for _, f in stream if f.get("step") == "b"] == ["queued", "running"]
    # A dependency that did not succeed never lets a dependent be taken ahead.
    failed = finish("x", "failed", "", ("c", "d"), ahead("c", "a", "x"), ahead("d", "x"))
    assert failed.applied and sorted(failed.ready) == ["c", "d"]
    assert [c.kind for c in failed.then] == ["unready", "unready"]
    assert store.all_statuses(run_id)["c"] == store.all_statuses(run_id)["d"] == "pending"
