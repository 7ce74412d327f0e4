"""The run-state store on fakeredis (Lua scripts included): queueing, taking, claiming in
place, settling (records, retries, releases, fail-fast), maps, stops, finish, reclaim and
the tool semaphore, one transition at a time.

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

from executor import Flow, Step
from executor.backends.redis.claims import Claim, Completion, NextClaim, Terminal
from executor.backends.redis.run_context import RunContext
from executor.backends.redis.store import KEY_NAMES, RedisStore

LONG_LEASE = 60_000  # ms: never expires during a test
SHORT_LEASE = 40  # ms
LANE = "dagrelay"


def now() -> str:
    return datetime.now(UTC).isoformat()


@pytest.fixture
def store() -> RedisStore:
    return RedisStore(fakeredis.FakeRedis(decode_responses=True), result_ttl=3600)


def new_run(
    store: RedisStore, deps: dict[str, list[str]], *, fail_fast: bool = False, **steps: Any
) -> str:
    """A running run whose steps are the keys of `deps` (each depending on, and reading
    the output of, the steps it maps to); `steps` override a step's fields."""
    flow = Flow(
        name="t",
        on_failure="fail_fast" if fail_fast else "continue",
        steps=[
            Step(
                id=s,
                tool="t",
                inputs={"x": [f"$steps.{d}" for d in ds]},
                **steps.get(s, {}),
            )
            for s, ds in deps.items()
        ],
    )
    run_id = uuid.uuid4().hex
    ctx = RunContext.build(run_id, flow, {})
    meta = {"status": "running", "flow_name": "t", "started_at": now(), "flow": "{}"}
    meta.update(ctx.script_fields())
    remaining = {s: len(d) for s, d in ctx.dag.deps.items()}
    store.create_run(run_id, meta, list(deps), remaining, None)
    return run_id


def queue(store: RedisStore, run_id: str, *steps: str, per: int = 1) -> int:
    return store.enqueue(run_id, [(LANE, per, list(steps))], now())[0]


def take(
    store: RedisStore,
    run_id: str,
    n: int = 1,
    lease_ms: int = LONG_LEASE,
    worker: str = "w1",
    **kwargs: Any,
) -> list[Claim]:
    kwargs.setdefault("spend", True)
    return list(store.take(run_id, LANE, n, 1, lease_ms, now(), worker, **kwargs).claims)


def complete(
    store: RedisStore,
    run_id: str,
    unit: str,
    status: str = "succeeded",
    output: Any = None,
    dependents: tuple[str, ...] = (),
    attempt: int | None = 1,
    retry_ms: int | None = None,
    error: dict[str, Any] | None = None,
    then: tuple[NextClaim, ...] = (),
) -> Completion:
    attempt_json = json.dumps({"number": attempt, "started_at": now()}) if attempt else ""
    record = {"status": status, "worker": "w1", "error": error}
    out = json.dumps(output) if status == "succeeded" else ""
    t = Terminal(unit, status, out, record, now(), "w1", attempt, attempt_json, retry_ms, LANE)
    return store.complete_many(run_id, [(t, dependents, then)], 10_000)[0][0]


def key(store: RedisStore, run_id: str, name: str) -> str:
    return store.keys(run_id)[KEY_NAMES.index(name)]


def events(store: RedisStore, run_id: str) -> list[dict[str, str]]:
    return [e for _, e in store.client.xrange(key(store, run_id, "events"))]


def snapshot(store: RedisStore, run_id: str) -> dict[str, Any]:
    """Every key of the run with its full content (streams as entry lists)."""
    c = store.client
    out: dict[str, Any] = {}
    for k in sorted(c.scan_iter(match=f"{store.namespace}:{{{run_id}}}:*")):
        kind = c.type(k)
        if kind == "hash":
            out[k] = c.hgetall(k)
        elif kind == "stream":
            out[k] = c.xrange(k)
        elif kind == "zset":
            out[k] = c.zrange(k, 0, -1)
        elif kind == "set":
            out[k] = sorted(c.smembers(k))
    return out


# creating and queueing -----------------------------------------------------------------
def test_create_run_writes_every_step_pending_and_refuses_a_duplicate_id(store):
    run_id = new_run(store, {"a": [], "b": ["a"]})
    assert store.all_statuses(run_id) == {"a": "pending", "b": "pending"}
    assert store.client.hget(key(store, run_id, "remaining"), "b") == "1"
    with pytest.raises(ValueError, match="exists already"):
        store.create_run(run_id, {"status": "running"}, ["a"], {"a": 0}, None)


def test_every_key_of_a_run_shares_one_hash_tag(store):
    run_id = new_run(store, {"a": []})
    queue(store, run_id, "a")
    keys = list(store.client.scan_iter(match=f"*{run_id}*"))
    assert keys and all(f"{{{run_id}}}" in k for k in keys)
    assert store.todo_key(run_id, LANE) in keys


def test_queueing_puts_each_pending_step_in_its_lane_once_and_counts_its_tokens(store):
    n = 2500
    steps = {f"s{i}": [] for i in range(n)}
    run_id = new_run(store, steps)
    assert queue(store, run_id, *steps, per=16) == -(-n // 16)
    assert set(store.all_statuses(run_id).values()) == {"queued"}
    assert store.client.zcard(store.todo_key(run_id, LANE)) == n
    assert [e["status"] for e in events(store, run_id)] == ["queued"] * n
    # Again: nothing moves, and enough tokens are on their way already.
    assert queue(store, run_id, *steps, per=16) == 0
    assert store.client.xlen(key(store, run_id, "events")) == n
    assert store.lane_tokens(run_id) == {LANE: (n, -(-n // 16))}


# taking and claiming -------------------------------------------------------------------
def test_a_take_claims_due_units_with_the_outputs_they_read(store):
    run_id = new_run(store, {"a": [], "b": ["a"], "c": ["a", "b"]})
    queue(store, run_id, "a")
    (a,) = take(store, run_id, 3)
    assert (a.kind, a.unit, a.attempt, a.outputs) == ("ok", "a", 1, {})
    assert take(store, run_id) == []  # nothing else is due
    complete(store, run_id, "a", output={"v": 1}, dependents=("b", "c"))
    queue(store, run_id, "b")
    (b,) = take(store, run_id)
    assert b.outputs == {"a": {"v": 1}}
    complete(store, run_id, "b", output=[0.15000000000000002], dependents=("c",))
    queue(store, run_id, "c")
    (c,) = take(store, run_id)
    assert c.outputs == {"a": {"v": 1}, "b": [0.15000000000000002]}  # to the last digit
    att = json.loads(store.client.hget(key(store, run_id, "att"), "c:1"))
    assert att["worker"] == "w1" and att["number"] == 1
    assert [e["status"] for e in events(store, run_id) if e["step"] == "c"] == [
        "queued",
        "running",
    ]


def test_a_claim_returns_every_output_it_needs_in_order_however_many(store):
    n = 9000
    steps: dict[str, list[str]] = {f"p{i}": [] for i in range(n)}
    steps["join"] = list(steps)
    run_id = new_run(store, steps)
    pipe = store.client.pipeline()
    for i in range(n):
        pipe.hset(key(store, run_id, "out"), f"p{i}", json.dumps(i))
        pipe.hset(key(store, run_id, "status"), f"p{i}", "succeeded")
    pipe.hset(key(store, run_id, "remaining"), "join", 0)
    pipe.execute()
    queue(store, run_id, "join")
    (claim,) = take(store, run_id)
    assert claim.outputs == {f"p{i}": i for i in range(n)}


def test_every_take_leaves_enough_tokens_on_their_way_for_what_is_due(store):
    run_id = new_run(store, {f"s{i}": [] for i in range(10)})
    assert store.enqueue(run_id, [(LANE, 2, [f"s{i}" for i in range(10)])], now()) == [5]
    sent = 5
    for n in (3, 1, 1, 1, 1, 1, 1, 1):
        took = store.take(run_id, LANE, n, 2, LONG_LEASE, now(), "w", spend=True)
        sent += took.tokens
        due, on_way = store.lane_tokens(run_id).get(LANE, (0, 0))
        assert on_way >= -(-due // 2)  # at least a token per 2 due units
    assert store.lane_tokens(run_id)[LANE][0] == 0  # all 10 taken
    assert sent <= 10  # and no flood of tokens: one per take at most, here


def test_a_take_passes_over_the_steps_it_is_told_to_and_takes_named_units(store):
    run_id = new_run(store, {"lim": [], "free": []})
    queue(store, run_id, "lim", "free")
    took = store.take(run_id, LANE, 2, 1, LONG_LEASE, now(), "w", spend=True, skip=("lim",))
    assert [c.unit for c in took.claims] == ["free"] and took.passed == ("lim",)
    assert store.all_statuses(run_id)["lim"] == "queued"
    named = store.take(run_id, LANE, 1, 1, LONG_LEASE, now(), "w", spend=False, named=("lim",))
    assert [c.unit for c in named.claims] == ["lim"]


def test_a_take_passes_over_the_items_of_a_limited_map_not_the_map(store):
    run_id = map_run(store, [1, 2])
    took = store.take(run_id, LANE, 5, 1, LONG_LEASE, now(), "w", spend=True, skip=("m[]",))
    assert took.claims == () and sorted(took.passed) == ["m[0]", "m[1]"]
    other = new_run(store, {"m": []}, m={"map": "$input.items"})
    queue(store, other, "m")
    took = store.take(other, LANE, 5, 1, LONG_LEASE, now(), "w", spend=True, skip=("m[]",))
    assert [c.unit for c in took.claims] == ["m"]  # the map itself calls no tool


def test_a_cancelled_unit_left_in_its_todo_set_is_dropped_by_the_next_take(store):
    run_id = new_run(store, {"a": [], "b": []})
    queue(store, run_id, "a", "b")
    store.stop(run_id, "cancelled", now())
    assert store.client.zcard(store.todo_key(run_id, LANE)) == 2  # left where they were
    assert take(store, run_id, 2) == []
    assert store.client.zcard(store.todo_key(run_id, LANE)) == 0


def test_claiming_in_place_queues_and_runs_a_pending_step_at_once(store):
    run_id = new_run(store, {"a": [], "b": ["a"]})
    queue(store, run_id, "a")
    take(store, run_id)
    complete(store, run_id, "a", output=7, dependents=("b",))
    (b,) = store.claim_inplace(run_id, [("b", "t1")], LANE, LONG_LEASE, now(), "w1")
    assert (b.kind, b.outputs) == ("ok", {"a": 7})
    assert [e["status"] for e in events(store, run_id) if e["step"] == "b"] == [
        "queued",
        "running",
    ]
    # Claimed already, or not pending: refused.
    assert store.claim_inplace(run_id, [("b", "t2")], LANE, LONG_LEASE, now(), "w2")[0].kind == (
        "stale"
    )
    assert store.claim_inplace(run_id, [("a", "t3")], LANE, LONG_LEASE, now(), "w2")[0].kind == (
        "done"
    )
    assert store.claim_inplace(run_id, [("zz", "t4")], LANE, LONG_LEASE, now(), "w2")[0].kind == (
        "missing"
    )


# settling ------------------------------------------------------------------------------
def test_completing_twice_changes_nothing_the_second_time(store):
    run_id = new_run(store, {"a": [], "b": ["a"]})
    queue(store, run_id, "a")
    take(store, run_id)
    first = complete(store, run_id, "a", output=1, dependents=("b",))
    assert first.recorded and first.ready == ("b",) and first.clean == frozenset({"b"})
    before = snapshot(store, run_id)
    again = complete(store, run_id, "a", status="failed", dependents=("b",))
    assert again.applied == 0 and not again.recorded
    assert snapshot(store, run_id) == before


def test_complete_of_an_unknown_unit_is_not_applied_and_writes_nothing(store):
    run_id = new_run(store, {"a": []})
    before = snapshot(store, run_id)
    assert complete(store, run_id, "zz").applied == -1
    assert snapshot(store, run_id) == before


def test_a_dependent_is_released_once_when_its_last_dependency_ends(store):
    run_id = new_run(store, {"a": [], "b": [], "c": ["a", "b"]})
    queue(store, run_id, "a", "b")
    take(store, run_id, 2)
    assert complete(store, run_id, "a", dependents=("c",)).ready == ()
    done = complete(store, run_id, "b", status="failed", dependents=("c",))
    assert done.ready == ("c",) and done.clean == frozenset()  # a dependency failed
    assert done.unfinished == 1


def test_an_attempt_taken_over_cannot_record_over_the_new_holder(store):
    run_id = new_run(store, {"a": []})
    queue(store, run_id, "a")
    take(store, run_id, lease_ms=SHORT_LEASE, worker="slow")
    time.sleep(3 * SHORT_LEASE / 1000)
    assert store.reclaim(run_id, "a", LANE, now())[0] == 1
    (again,) = take(store, run_id, worker="new")
    assert again.attempt == 2
    assert complete(store, run_id, "a", output="late", attempt=1).applied == 0
    assert complete(store, run_id, "a", output="new", attempt=2).recorded
    assert store.all_outputs(run_id) == {"a": "new"}


def test_a_retry_queues_the_next_attempt_when_it_is_due(store):
    run_id = new_run(store, {"a": []})
    queue(store, run_id, "a")
    take(store, run_id)
    err = {"type": "ValueError", "message": "flaky"}
    done = complete(store, run_id, "a", status="failed", retry_ms=150, error=err)
    assert done.applied == 2 and done.retry_tokens == 1
    assert store.all_statuses(run_id)["a"] == "queued"
    att = json.loads(store.client.hget(key(store, run_id, "att"), "a:1"))
    assert att["error"] == err
    early = store.take(run_id, LANE, 1, 1, LONG_LEASE, now(), "w", spend=True)
    assert early.claims == () and 0 < early.delay_ms <= 150  # a token later, at its time
    time.sleep(0.2)
    (second,) = take(store, run_id)
    assert second.attempt == 2
    assert [e["status"] for e in events(store, run_id)][-2:] == ["retrying", "running"]


def test_a_fail_fast_failure_stops_the_run_in_its_own_script(store):
    run_id = new_run(store, {"bad": [], "other": [], "after": ["bad"]}, fail_fast=True)
    queue(store, run_id, "bad", "other")
    take(store, run_id, 2)
    err = {"type": "ValueError", "message": "boom"}
    done = complete(store, run_id, "bad", status="failed", dependents=("after",), error=err)
    assert done.recorded and done.stop == "failed"
    assert done.ready == ()  # `after` was cancelled by the stop, not released
    assert store.all_statuses(run_id) == {
        "bad": "failed",
        "other": "running",
        "after": "cancelled",
    }
    meta = store.run_meta(run_id, "stop", "first_failed", "n_failed")
    assert meta == {"stop": "failed", "first_failed": "bad", "n_failed": "1"}
    # `other` ends after the stop: cancelled, its outcome and retries notwithstanding.
    late = complete(store, run_id, "other", status="failed", retry_ms=0, error=err)
    assert late.recorded
    rec = json.loads(store.client.hget(key(store, run_id, "rec"), "other"))
    assert store.all_statuses(run_id)["other"] == "cancelled"
    assert rec["error"]["type"] == "CancelledError" and "fail_fast" in rec["error"]["message"]
    assert store.run_meta(run_id, "n_failed")["n_failed"] == "1"
    assert store.step_error(run_id, "bad").message == "boom"


def test_a_fail_fast_stop_spares_a_cleanup_step_and_says_when_it_is_ready(store):
    run_id = new_run(
        store,
        {"bad": [], "slow": [], "cleanup": ["bad", "slow"], "report": ["cleanup"]},
        fail_fast=True,
        cleanup={"trigger": "all_done"},
    )
    queue(store, run_id, "bad", "slow")
    take(store, run_id, 2)
    done = complete(store, run_id, "bad", status="failed", dependents=("cleanup",))
    assert done.ready == ()  # `slow` still runs
    statuses = store.all_statuses(run_id)
    assert (statuses["cleanup"], statuses["report"]) == ("pending", "cancelled")
    late = complete(store, run_id, "slow", dependents=("cleanup",))
    assert late.ready == ("cleanup",) and late.clean == frozenset()
    # It may still be queued and run, after the stop.
    queue(store, run_id, "cleanup")
    assert store.all_statuses(run_id)["cleanup"] == "queued"
    (c,) = take(store, run_id)
    assert c.unit == "cleanup"
    assert complete(store, run_id, "cleanup", dependents=("report",)).recorded
    assert store.all_statuses(run_id)["cleanup"] == "succeeded"


def test_a_completion_claims_ahead_only_what_it_made_ready_with_all_succeeded(store):
    run_id = new_run(store, {"a": [], "b": [], "c": ["a"], "d": ["a", "b"]})
    queue(store, run_id, "a", "b")
    take(store, run_id, 2)
    ahead = tuple(NextClaim(s, f"t{s}", LONG_LEASE, now(), "w1", LANE) for s in ("c", "d"))
    done = complete(store, run_id, "a", output=5, dependents=("c", "d"), then=ahead)
    assert [(c.kind, c.unit) for c in done.then] == [("ok", "c"), ("unready", "d")]
    assert done.then[0].outputs == {"a": 5}
    assert store.all_statuses(run_id)["c"] == "running"
    failed = complete(store, run_id, "b", status="failed", dependents=("d",), then=ahead[1:])
    assert [c.kind for c in failed.then] == ["unready"]  # a dependency failed: decide it


# maps ----------------------------------------------------------------------------------
def map_run(store: RedisStore, values: list[Any], **kwargs: Any) -> str:
    run_id = new_run(store, {"m": [], "after": ["m"]}, m={"map": "$input.items"}, **kwargs)
    queue(store, run_id, "m")
    (claim,) = take(store, run_id)
    assert claim.unit == "m"
    items = [("", json.dumps(v)) for v in values]
    exp = store.expand(
        run_id,
        "m",
        1,
        now(),
        LANE,
        LANE,
        1,
        {"worker": "w1"},
        items,
        0,
        LONG_LEASE,
        "w1",
        ("after",),
    )
    assert exp.kind == "ok" and exp.tokens == len(values)
    return run_id


def test_a_map_ends_with_its_last_item_its_output_in_item_order(store):
    run_id = map_run(store, [1.5, {"x": 0.15000000000000002}, "c"])
    claims = take(store, run_id, 3)
    assert sorted(c.unit for c in claims) == ["m[0]", "m[1]", "m[2]"]
    assert {c.unit: c.item for c in claims}["m[1]"] == {"x": 0.15000000000000002}
    assert store.all_statuses(run_id)["m"] == "running"
    for unit, out in (("m[2]", "C"), ("m[0]", [1])):
        done = complete(store, run_id, unit, output=out, dependents=("after",))
        assert done.recorded and done.map_status == ""
    last = complete(store, run_id, "m[1]", output=0.15000000000000002, dependents=("after",))
    assert last.map_status == "succeeded" and last.ready == ("after",)
    assert store.all_outputs(run_id)["m"] == [[1], 0.15000000000000002, "C"]
    assert store.all_statuses(run_id) == {"m": "succeeded", "after": "pending"}
    att = json.loads(store.client.hget(key(store, run_id, "att"), "m:1"))
    assert att["finished_at"] and att["error"] is None


def test_a_map_with_a_failed_item_fails_naming_the_first_failed_item(store):
    run_id = map_run(store, [1, 2, 3])
    take(store, run_id, 3)
    err = {"type": "ValueError", "message": "bad item", "traceback": "tb"}
    complete(store, run_id, "m[2]", status="failed", error=err, dependents=("after",))
    complete(store, run_id, "m[0]", output=1, dependents=("after",))
    done = complete(store, run_id, "m[1]", status="failed", error=err, dependents=("after",))
    assert done.map_status == "failed" and done.ready == ("after",)
    e = store.step_error(run_id, "m")
    assert (e.type, e.message) == ("ValueError", "2 of 3 items failed; item 1: bad item")
    assert store.run_meta(run_id, "first_failed")["first_failed"] == "m"


def test_a_map_whose_output_is_too_large_fails(store):
    run_id = map_run(store, ["x" * 6000, "y" * 6000])
    take(store, run_id, 2)
    complete(store, run_id, "m[0]", output="x" * 6000, dependents=("after",))
    done = complete(store, run_id, "m[1]", output="y" * 6000, dependents=("after",))
    assert done.map_status == "failed"
    e = store.step_error(run_id, "m")
    assert e.type == "executor.errors.ToolOutputError"
    assert e.message.startswith("output of tool 't' is 12,008 bytes of JSON, over the limit ")


def test_a_map_without_items_ends_with_its_expansion(store):
    run_id = new_run(store, {"m": []})
    queue(store, run_id, "m")
    take(store, run_id)
    exp = store.expand(run_id, "m", 1, now(), LANE, LANE, 1, {}, [], 0, LONG_LEASE, "w", ())
    assert (exp.kind, exp.map_status, exp.unfinished) == ("ok", "succeeded", 0)
    assert store.all_outputs(run_id) == {"m": []}


def test_an_expansion_claims_items_for_its_worker_and_decided_items_are_recorded(store):
    run_id = new_run(store, {"m": []})
    queue(store, run_id, "m")
    take(store, run_id)
    skipped = json.dumps({"status": "skipped", "error": None})
    items = [("", "1"), ("skipped", skipped), ("", "3")]
    exp = store.expand(run_id, "m", 1, now(), LANE, LANE, 1, {}, items, 1, LONG_LEASE, "w", ())
    assert [c.unit for c in exp.claims] == ["m[0]"] and exp.tokens == 1
    assert store.client.hget(key(store, run_id, "status"), "m[1]") == "skipped"
    (other,) = take(store, run_id, 5)
    assert other.unit == "m[2]" and other.item == 3


def test_a_stop_cancels_the_queued_items_of_a_map_and_ends_it_with_the_last(store):
    run_id = map_run(store, [1, 2, 3])
    (running,) = take(store, run_id, 1)
    store.stop(run_id, "cancelled", now())
    assert store.all_statuses(run_id)["m"] == "running"  # an item still runs
    done = complete(store, run_id, running.unit, output=1, dependents=("after",))
    assert done.recorded and done.map_status == "cancelled"
    assert store.all_statuses(run_id) == {"m": "cancelled", "after": "cancelled"}
    assert store.step_error(run_id, running.unit).type == "CancelledError"


# stop, finish --------------------------------------------------------------------------
def test_stop_cancels_what_has_not_started_and_tells_the_workers(store):
    run_id = new_run(store, {"a": [], "b": [], "c": ["a"]})
    queue(store, run_id, "a", "b")
    take(store, run_id)  # a runs
    pubsub = store.client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(store.stop_channel)
    pubsub.get_message(timeout=0.1)
    assert store.stop(run_id, "cancelled", now()) == (True, 1, [])
    assert store.all_statuses(run_id) == {"a": "running", "b": "cancelled", "c": "cancelled"}
    message = pubsub.get_message(timeout=1)
    assert message is not None and message["data"] == f"{run_id}|cancelled"
    assert store.stop(run_id, "timed_out", now()) == (False, -1, [])  # once
    assert store.renew_many([(run_id, "a", 1, LANE)], LONG_LEASE) == [(True, "cancelled")]


def run_to_the_end(store: RedisStore) -> str:
    run_id = new_run(store, {"a": []})
    queue(store, run_id, "a")
    take(store, run_id)
    assert complete(store, run_id, "a", output=2).unfinished == 0
    return run_id


def test_finish_writes_once_and_gives_every_key_of_the_run_its_ttl(store):
    run_id = run_to_the_end(store)
    c = store.client
    found = sorted(c.scan_iter(match=f"dagrelay:{{{run_id}}}:*"))
    assert store.todo_key(run_id, LANE) not in found  # emptied: Redis drops the key
    assert all(c.ttl(k) == -1 for k in found)  # no TTL while it runs
    assert store.finish(run_id, "succeeded", now(), "2", "", 1.5)
    meta = store.run_meta(run_id, "status", "output", "wall_time")
    assert meta == {"status": "succeeded", "output": "2", "wall_time": "1.5"}
    after = sorted(c.scan_iter(match=f"dagrelay:{{{run_id}}}:*"))
    # The leases are gone (nothing is left to re-queue or repair); the end stream is new.
    assert after == sorted(
        [*(k for k in found if k != key(store, run_id, "leases")), key(store, run_id, "end")]
    )
    for k in after:
        assert 3500 < c.ttl(k) <= 3600, k
    assert store.wait_end(run_id, None)
    before = snapshot(store, run_id)
    assert not store.finish(run_id, "failed", now(), "", "late", 9.0)
    assert snapshot(store, run_id) == before


def test_a_todo_set_left_at_the_end_gets_the_ttl_too(store):
    run_id = new_run(store, {"a": [], "b": []})
    queue(store, run_id, "a", "b")
    store.stop(run_id, "cancelled", now())  # their entries stay in the set
    store.finish(run_id, "cancelled", now(), "", "run cancelled", 0.1)
    assert 0 < store.client.ttl(store.todo_key(run_id, LANE)) <= 3600


def test_a_completed_units_lease_stays_until_its_worker_has_coordinated(store):
    run_id = new_run(store, {"a": [], "b": ["a"]})
    queue(store, run_id, "a")
    take(store, run_id)
    complete(store, run_id, "a", dependents=("b",))
    (left,), _ = store.expired_leases(run_id, time.time() + 3600)
    assert left == ("a", LANE)  # should its worker die now, a sweeper repairs
    store.take(
        run_id, LANE, 1, 1, LONG_LEASE, now(), "w", spend=False, drops=[(run_id, "a|" + LANE)]
    )
    assert store.expired_leases(run_id, time.time() + 3600) == ([], 0.0)


def test_finish_removes_the_deadline_hint(store):
    run_id = uuid.uuid4().hex
    store.create_run(
        run_id, {"status": "running", "started_at": now()}, ["a"], {"a": 0}, time.time() - 1
    )
    assert store.overdue_runs(time.time()) == [run_id]
    store.finish(run_id, "timed_out", now(), "", "too slow", 1.0)
    assert store.overdue_runs(time.time()) == []


def test_the_ttl_is_the_run_creators_whichever_process_finishes_it(store):
    run_id = run_to_the_end(store)
    other = RedisStore(store.client, result_ttl=60)
    other.finish(run_id, "succeeded", now(), "2", "", 1.0)
    assert 3500 < store.client.ttl(key(store, run_id, "meta")) <= 3600


# reclaim and renew -------------------------------------------------------------------
def test_reclaim_of_a_live_lease_does_nothing(store):
    run_id = new_run(store, {"a": []})
    queue(store, run_id, "a")
    take(store, run_id)
    before = snapshot(store, run_id)
    assert store.reclaim(run_id, "a", LANE, now()) == (0, 0, 0)
    assert store.reclaim(run_id, "zz", LANE, now()) == (0, 0, 0)
    assert snapshot(store, run_id) == before


def test_reclaim_of_an_expired_lease_queues_the_next_attempt(store):
    run_id = new_run(store, {"a": []})
    queue(store, run_id, "a")
    take(store, run_id, lease_ms=SHORT_LEASE, worker="dead")
    assert store.leased_runs(time.time() + 1) == [run_id]  # a sweeper will look
    assert store.expired_leases(run_id, time.time() + 1)[0] == [("a", LANE)]
    time.sleep(3 * SHORT_LEASE / 1000)
    kind, attempt, tokens = store.reclaim(run_id, "a", LANE, now())
    assert (kind, attempt) == (1, 2) and tokens >= 0
    assert store.all_statuses(run_id)["a"] == "queued"
    lost = json.loads(store.client.hget(key(store, run_id, "att"), "a:1"))
    assert lost["error"]["type"] == "WorkerLost" and lost["worker"] == "dead"
    assert events(store, run_id)[-1]["status"] == "requeued"
    assert store.reclaim(run_id, "a", LANE, now()) == (0, 0, 0)  # once is enough
    (again,) = take(store, run_id, worker="alive")
    assert again.attempt == 2


def test_reclaim_in_a_stopped_run_reports_the_lost_attempt(store):
    run_id = new_run(store, {"a": []})
    queue(store, run_id, "a")
    take(store, run_id, lease_ms=SHORT_LEASE)
    store.stop(run_id, "cancelled", now())
    time.sleep(3 * SHORT_LEASE / 1000)
    assert store.reclaim(run_id, "a", LANE, now())[:2] == (2, 1)
    assert store.all_statuses(run_id)["a"] == "running"  # the caller records it cancelled


def test_reclaim_of_a_terminal_unit_asks_for_a_repair(store):
    run_id = run_to_the_end(store)
    assert store.reclaim(run_id, "a", LANE, now()) == (3, 0, 0)


def test_renew_keeps_a_lease_alive_only_for_its_own_attempt(store):
    run_id = new_run(store, {"a": []})
    queue(store, run_id, "a")
    take(store, run_id, lease_ms=SHORT_LEASE * 2)
    assert store.renew_many([(run_id, "a", 2, LANE)], LONG_LEASE) == [(False, "")]
    for _ in range(5):
        time.sleep(SHORT_LEASE / 1000)
        assert store.renew_many([(run_id, "a", 1, LANE)], SHORT_LEASE * 2) == [(True, "")]
    assert store.reclaim(run_id, "a", LANE, now()) == (0, 0, 0)


# the tool semaphore ----------------------------------------------------------------------
def test_slots_are_given_up_to_the_limit_across_runs_and_come_back(store):
    got = store.acquire_slots("lim", 2, ["h1", "h2", "h3"], LONG_LEASE)
    assert got == ["h1", "h2"]
    assert store.acquire_slots("lim", 2, ["h4"], LONG_LEASE) == []
    assert store.acquire_slots("other", 2, ["h4"], LONG_LEASE) == ["h4"]  # another tool
    store.release_slot("lim", "h1")
    assert store.acquire_slots("lim", 2, ["h4", "h5"], LONG_LEASE) == ["h4"]
    assert sorted(store.client.zrange(store.semaphore_key("lim"), 0, -1)) == ["h2", "h4"]


def test_a_crashed_holder_cannot_leak_its_slot(store):
    assert store.acquire_slots("lim", 1, ["dead"], SHORT_LEASE) == ["dead"]
    assert store.acquire_slots("lim", 1, ["h"], LONG_LEASE) == []
    time.sleep(3 * SHORT_LEASE / 1000)
    assert store.acquire_slots("lim", 1, ["h"], LONG_LEASE) == ["h"]


def test_a_renewed_slot_outlives_the_semaphore_keys_initial_ttl(store):
    assert store.acquire_slots("lim", 1, ["h"], SHORT_LEASE * 2) == ["h"]
    for _ in range(5):
        time.sleep(SHORT_LEASE / 1000)
        store.renew_slots([("lim", "h")], SHORT_LEASE * 2)
    assert store.acquire_slots("lim", 1, ["x"], LONG_LEASE) == []


def test_holder_names_differ_for_every_try_at_a_unit(store):
    assert store.holder("r", "a") != store.holder("r", "a")


# the rest --------------------------------------------------------------------------------
def test_scripts_forgotten_by_redis_are_loaded_again(store):
    run_id = new_run(store, {"a": []})
    store.client.script_flush()
    queue(store, run_id, "a")
    assert [c.unit for c in take(store, run_id)] == ["a"]


def test_list_runs_skips_expired_runs_and_forgets_them(store):
    keep = run_to_the_end(store)
    gone = new_run(store, {"x": []})
    for k in store.keys(gone):
        store.client.delete(k)
    assert [rid for rid, _ in store.list_runs()] == [keep]
    assert store.client.zscore(store.runs_key, gone) is None
