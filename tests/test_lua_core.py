"""Differential test: the Redis backend's Lua scripts against the pure scheduling core.

For generated DAGs (2-14 steps; edges from `depends_on`, `$steps.x` inputs and `when`
conditions; every trigger rule `Step.trigger` accepts; `when` over `input` and over
dependencies' outputs, some of which fail to evaluate; maps; fail_fast or continue) and
generated event sequences (which queued unit a worker takes next, which running unit
ends next and how: succeeded, failed, failed with a retry allowed, cancelled once a stop
caught it; a duplicate settle now and then; a cancel or timeout at some point), one run
is driven twice:

* the reference: `RunState` and `Scheduler` (executor/run/scheduling.py), moved on as
  the embedded backend moves them (a unit caught by a stop settles as
  `Scheduler.settled` says; a map ends when its last item does);
* the Redis side on fakeredis (Lua included): a `RedisStore` and a `Coordinator` whose
  sender only records token messages. The run is created as `RedisBackend.submit`
  creates it; a worker's part is played by hand: `store.take` from the unit's lane,
  `store.expand` for a map step, `coordinator.completed_many` with a `Terminal` built as
  `workers/attempt.py` builds one (claims ahead, dependents kept and claimed in place).

After every event both must agree on every unit's status, on the units queued in each
lane's todo set (and a token on its way for each lane with queued units), on the stop
reason and the unfinished count, and on the run status (`finalize` writes it once the
last step ends); at the end, on the run's error (naming the step that failed first),
its output and every step's output.

A failure prints the flow (YAML), its input and the events: `replay` runs them again.

Two disagreements it found are fixed, each kept as a regression test below (the
cases it reached): a cascade of decisions recorded in waves on the Redis side was
decided depth first by the core (the core now decides in waves too), and a unit
recorded `cancelled` by a stop was carried forward with its attempt's own outcome (the
coordinator now carries the status recorded).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import typing
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import fakeredis
import fakeredis.commands_mixins.server_mixin as fake_server
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from executor import Flow, Step
from executor.backends.redis.claims import Claim, NextClaim, Terminal, new_token
from executor.backends.redis.coordinator import Coordinator
from executor.backends.redis.messages import Token, per_token
from executor.backends.redis.run_context import RunContext
from executor.backends.redis.store import KEY_NAMES, RedisStore
from executor.model.references import Scope
from executor.run.records import TERMINAL_STEP, StepError
from executor.run.scheduling import Actions, RunState

# Read from the model: a rule added to `Step.trigger` is generated without a change here.
TRIGGERS: tuple[str, ...] = typing.get_args(Step.model_fields["trigger"].annotation)
STOPS = ("cancelled", "timed_out")
RUN_ID = "diff"
WORKER = "host:1:loop"
LEASE_MS = 600_000  # never expires during a test: no sweeper here
MAX_ATTEMPTS = 3  # a unit is offered "retry" only before its third attempt
MAX_EVENTS = 400
# DAGRELAY_LUA_EXAMPLES=3000 for a thorough run; the default keeps the suite fast.
EXAMPLES = int(os.environ.get("DAGRELAY_LUA_EXAMPLES", "100"))

Event = tuple[Any, ...]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def parent_of(unit: str) -> str | None:
    return unit.partition("[")[0] if unit.endswith("]") else None


def index_of(unit: str) -> int:
    return int(unit[unit.index("[") + 1 : -1])


class Clock:
    """fakeredis' TIME, a millisecond later at each call. The scripts order a lane's
    units by when they were queued; on the real clock two units queued in the same
    millisecond tie (and sort by name) or not from one run to the next, and so would the
    events generated after them."""

    def __init__(self) -> None:
        self.ms = int(time.time() * 1000)
        self.calls = 0

    def time(self) -> float:
        self.ms += 1
        self.calls += 1
        return self.ms / 1000


@contextlib.contextmanager
def redis_clock() -> Iterator[None]:
    saved = fake_server.time
    clock = fake_server.time = Clock()  # type: ignore[assignment]
    try:
        PROBE.time()
        assert clock.calls == 1, "fakeredis' TIME no longer reads server_mixin.time: see Clock"
        yield
    finally:
        fake_server.time = saved


PROBE = fakeredis.FakeRedis(server=fakeredis.FakeServer())


class Recorder:
    """A sender that only records token messages, and counts those not spent yet."""

    def __init__(self) -> None:
        self.sent: list[Token] = []
        self.pending: Counter[str] = Counter()

    def send_many(self, tokens: list[Token]) -> None:
        self.sent += tokens
        for t in tokens:
            self.pending[t.lane] += 1


class Twin:
    """One run of a flow, on the reference core and on Redis, moved by the same events."""

    def __init__(self, flow: Flow, inputs: dict[str, Any]) -> None:
        self.flow = flow
        self.inputs = inputs
        self.dag = flow.validate_flow()
        # The reference.
        self.rs = RunState(self.dag, inputs)
        self.sched = self.rs.scheduler
        self.errors: dict[str, StepError | None] = {}  # each failed step's error
        self.items: dict[str, list[str]] = {}  # an expanded map's item statuses
        self.item_outputs: dict[str, list[Any]] = {}
        self.item_errors: dict[str, StepError] = {}
        self.retrying: set[str] = set()  # steps waiting for another attempt (running)
        # The Redis side.
        self.client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
        self.store = RedisStore(self.client)
        self.keys = self.store.keys(RUN_ID)
        self.sender = Recorder()
        self.coordinator = Coordinator(self.store, self.sender)  # tool_of: None, sync lanes
        self.ctx = RunContext.build(RUN_ID, flow, inputs, self.dag)
        self.claims: dict[str, Claim] = {}  # running units' claims
        self.terminals: dict[str, Terminal] = {}  # the last settle of each unit
        # Created as RedisBackend.submit creates a run.
        now = now_iso()
        meta = {
            "flow": flow.model_dump_json(),
            "inputs": json.dumps(inputs),
            "flow_name": flow.name,
            "flow_version": flow.version,
            "status": "running",
            "submitted_at": now,
            "started_at": now,
        }
        meta.update(self.ctx.script_fields())
        remaining = {s: len(d) for s, d in self.dag.deps.items()}
        self.store.create_run(RUN_ID, meta, list(self.dag.steps), remaining, None)
        self.coordinator.remember(self.ctx)
        self.coordinator.start(self.ctx)
        self._ref_apply(self.rs.start())

    def key(self, name: str) -> str:
        return self.keys[KEY_NAMES.index(name)]

    # What the units are ---------------------------------------------------------------
    def lane(self, unit: str) -> str:
        step = parent_of(unit) or unit
        lane = self.ctx.lane(step, False)
        assert self.coordinator.lane(self.ctx, step) == lane
        return lane

    def is_map(self, unit: str) -> bool:
        return parent_of(unit) is None and self.dag.steps[unit].map is not None

    def map_values(self, step_id: str) -> list[Any]:
        ref = self.dag.steps[step_id].map
        assert ref is not None and ref.startswith("$input.")
        return list(self.inputs[ref.removeprefix("$input.")])

    def caught(self, unit: str) -> bool:
        """Whether the run's stop catches the unit (it does not go on)."""
        stop = self.rs.stop_reason
        return stop is not None and not self.sched.survives(parent_of(unit) or unit, stop)

    @property
    def finished(self) -> bool:
        return self.rs.finished

    def expected(self) -> dict[str, str]:
        """Every unit's status as the reference has it, in Redis' terms (a step waiting
        for its next attempt is queued there)."""
        out = {s: ("queued" if s in self.retrying else st) for s, st in self.rs.status.items()}
        for m, its in self.items.items():
            out.update({f"{m}[{i}]": st for i, st in enumerate(its)})
        return out

    def options(self) -> tuple[list[str], list[str]]:
        """Units a worker may take now, and units that run now (maps run as their items)."""
        exp = self.expected()
        starts = sorted(u for u, s in exp.items() if s == "queued")
        finishes = sorted(u for u, s in exp.items() if s == "running" and not self.is_map(u))
        return starts, finishes

    # Events -------------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        kind = event[0]
        if kind == "start":
            _, unit, ahead = event
            self._ref_started(self._redis_take(unit, ahead))
        elif kind == "finish":
            _, unit, outcome, value, ahead, keep = event
            started = self._redis_finish(unit, outcome, value, ahead, keep)
            self._ref_finish(unit, outcome, value)
            self._ref_started(started)
        elif kind == "again":  # the same settle once more (a retried call): no change
            t = self.terminals[event[1]]
            self.coordinator.completed_many(self.ctx, [(t, _value(t), ())])
        elif kind == "stop":
            self.coordinator.stop(RUN_ID, event[1])
            self._ref_apply(self.rs.stop(event[1]))
        else:  # pragma: no cover
            raise ValueError(event)

    # The Redis side: a worker's part, by hand ----------------------------------------
    def _redis_take(self, unit: str, ahead: int) -> list[str]:
        lane = self.lane(unit)
        spend = self.sender.pending[lane] > 0  # a token message brought this take
        if spend:
            self.sender.pending[lane] -= 1
        took = self.store.take(
            RUN_ID, lane, 1, 1, LEASE_MS, now_iso(), WORKER, spend=spend, named=(unit,)
        )
        self.coordinator.send_tokens(RUN_ID, lane, took.tokens, 1)
        if took.delay_ms >= 0:
            self.coordinator.send_tokens(RUN_ID, lane, 1, 1, took.delay_ms)
        assert [c.unit for c in took.claims] == [unit], (
            f"take({unit!r}) claimed {[(c.kind, c.unit, c.detail) for c in took.claims]}"
        )
        return self._redis_claimed(took.claims[0], ahead)

    def _redis_claimed(self, claim: Claim, ahead: int = 0) -> list[str]:
        """A claimed unit starts: a map step turns into its items at once (claiming
        `ahead` of them). Returns the units now running."""
        assert claim.kind == "ok", claim
        if not self.is_map(claim.unit):
            self.claims[claim.unit] = claim
            return [claim.unit]
        step = claim.unit
        lane = self.lane(step)
        items = [("", json.dumps(v)) for v in self.map_values(step)]
        record = {"worker": WORKER, "queued_at": claim.queued_at, "started_at": claim.started_at}
        expansion = self.store.expand(
            RUN_ID,
            step,
            claim.attempt,
            now_iso(),
            lane=lane,  # of its items
            own_lane=lane,  # where the map step was claimed
            per_token=per_token(len(items)),
            record=record,
            items=items,
            ahead=min(ahead, len(items)),
            lease_ms=LEASE_MS,
            worker=WORKER,
            dependents=self.dag.dependents[step],
        )
        if expansion.kind == "stopped":
            # Claimed ahead with a completion whose dependents then stopped the run (a
            # `when` that failed): the worker settles the map cancelled.
            self._redis_settle(step, claim, "cancelled", None)
            return []
        assert expansion.kind == "ok", f"expand({step!r}): {expansion}"
        self.coordinator.send_tokens(RUN_ID, lane, expansion.tokens, per_token(len(items)))
        started = [step]
        for c in expansion.claims:
            self.claims[c.unit] = c
            started.append(c.unit)
        if expansion.map_status:  # no item: the map ended with its expansion
            self.coordinator.ended(self.ctx, step, expansion.map_status, None, expansion, None)
        return started

    def _redis_finish(
        self, unit: str, outcome: str, value: Any, ahead: bool, keep: bool
    ) -> list[str]:
        """Settle a running unit as a worker does; returns the units it then runs (claimed
        ahead with the completion, or kept and claimed in place)."""
        return self._redis_settle(unit, self.claims.pop(unit), outcome, value, ahead, keep)

    def _redis_settle(
        self,
        unit: str,
        claim: Claim,
        outcome: str,
        value: Any,
        ahead: bool = False,
        keep: bool = False,
    ) -> list[str]:
        lane = self.lane(unit)
        at = now_iso()
        status = outcome if outcome in ("succeeded", "cancelled") else "failed"
        error = None
        if outcome in ("failed", "retry"):
            error = {"type": "ValueError", "message": f"boom {unit}", "traceback": None}
        elif outcome == "cancelled":  # the worker's task was cancelled by the stop
            error = {"type": "CancelledError", "message": "stopped", "traceback": None}
        record = {
            "worker": WORKER,
            "queued_at": claim.queued_at,
            "started_at": claim.started_at or at,
            "finished_at": at,
            "error": error,
            "duration": 0.0,
        }
        attempt = {
            "number": claim.attempt,
            "started_at": claim.started_at or at,
            "worker": WORKER,
            "finished_at": at,
            "duration": 0.0,
            "error": error,
        }
        t = Terminal(
            unit,
            status,
            json.dumps(value) if status == "succeeded" else "",
            record,
            at,
            WORKER,
            claim.attempt,
            json.dumps(attempt),
            0 if outcome == "retry" else None,
            lane,
        )
        self.terminals[unit] = t
        then: tuple[NextClaim, ...] = ()
        if ahead and status == "succeeded" and outcome != "retry" and parent_of(unit) is None:
            # Every dependent the core may run without asking (the script refuses those
            # this completion does not make ready with every dependency succeeded).
            then = tuple(
                NextClaim(d, new_token(), LEASE_MS, at, WORKER, self.lane(d))
                for d in self.dag.dependents[unit]
                if d in self.sched.clean
            )
        nxt = self.coordinator.completed_many(
            self.ctx, [(t, _value(t), then)], keep=(lambda _c, _s: True) if keep else None
        )[0]
        started: list[str] = []
        for c in nxt.ahead:
            started += self._redis_claimed(c)
        by_lane: dict[str, list[str]] = {}
        for sid in nxt.kept:
            by_lane.setdefault(self.lane(sid), []).append(sid)
        for kept_lane, sids in by_lane.items():
            claims = self.store.claim_inplace(
                RUN_ID, [(s, new_token()) for s in sids], kept_lane, LEASE_MS, at, WORKER
            )
            for c in claims:  # one the same decisions cancelled (a fail-fast stop) is not
                if c.kind == "ok":
                    started += self._redis_claimed(c)
        return started

    # The reference, moved on as the embedded backend moves it -----------------------
    def _ref_apply(self, actions: Actions) -> None:
        for sid, status, error in actions.resolved:
            if status == "failed":
                self.errors[sid] = error
        self._ref_stop_effects()

    def _ref_stop_effects(self) -> None:
        """What a stop does to the units the core only asks to cancel (`cancel_running`):
        a step waiting for its next attempt ends cancelled; a map's queued items are
        cancelled, and the map ends once no item runs."""
        if self.rs.stop_reason is None:
            return
        for u in sorted(self.retrying):
            if u in self.retrying and self.caught(u):
                self.retrying.discard(u)
                self._ref_apply(self.rs.finish(u, "cancelled"))
        for m in list(self.items):
            if self.rs.status[m] == "running" and self.caught(m):
                self.items[m] = ["cancelled" if s == "queued" else s for s in self.items[m]]
                self._ref_end_map(m)

    def _ref_started(self, units: list[str]) -> None:
        """Units the Redis side started: each must be one the core has queued."""
        for u in units:
            m = parent_of(u)
            if m is not None:
                i = index_of(u)
                assert self.items[m][i] == "queued", f"Redis runs {u}: {self.items[m][i]} here"
                self.items[m][i] = "running"
                continue
            if u in self.retrying:
                self.retrying.discard(u)
                continue
            assert self.rs.status[u] == "queued", (
                f"Redis runs {u}, which the core has {self.rs.status[u]}"
            )
            self.rs.mark_running(u)
            if self.is_map(u):
                n = len(self.map_values(u))
                self.items[u] = ["queued"] * n
                self.item_outputs[u] = [None] * n
                self._ref_end_map(u)  # an empty map ends at once

    def _ref_finish(self, unit: str, outcome: str, value: Any) -> None:
        m = parent_of(unit)
        step = m or unit
        if outcome == "retry" and not self.caught(unit):
            if m is None:
                self.retrying.add(unit)
            else:
                self.items[m][index_of(unit)] = "queued"
            return
        status = outcome if outcome in ("succeeded", "cancelled") else "failed"
        status = self.sched.settled(step, status, self.rs.stop_reason)  # type: ignore[arg-type]
        if m is None:
            if status == "failed":
                self.errors[unit] = StepError(type="ValueError", message=f"boom {unit}")
            output = value if status == "succeeded" else None
            self._ref_apply(self.rs.finish(unit, status, output))
            return
        i = index_of(unit)
        self.items[m][i] = status
        if status == "succeeded":
            self.item_outputs[m][i] = value
        elif status == "failed":
            self.item_errors[unit] = StepError(type="ValueError", message=f"boom {unit}")
        self._ref_end_map(m)

    def _ref_end_map(self, m: str) -> None:
        """A running map whose items are all terminal ends (as `run_items` ends one)."""
        its = self.items[m]
        if self.rs.status[m] != "running" or any(s not in TERMINAL_STEP for s in its):
            return
        failed = [i for i, s in enumerate(its) if s == "failed"]
        output = None
        if "cancelled" in its:
            status = "cancelled"
        elif failed:
            status = "failed"
            first = self.item_errors[f"{m}[{failed[0]}]"]
            self.errors[m] = StepError(
                type=first.type,
                message=f"{len(failed)} of {len(its)} items failed; item {failed[0]}: "
                f"{first.message}",
                traceback=first.traceback,
            )
        else:
            status, output = "succeeded", list(self.item_outputs[m])
        status = self.sched.settled(m, status, self.rs.stop_reason)  # type: ignore[arg-type]
        self._ref_apply(self.rs.finish(m, status, output))

    # Comparing -----------------------------------------------------------------------
    def expected_end(self) -> tuple[str, str, Any]:
        """The run's status, error and output as the embedded backend computes them."""
        status: str = self.rs.run_status()
        output, error = None, None
        if status == "running":
            return status, "", None
        if status == "succeeded" and self.flow.output is not None:
            try:
                output = Scope(self.inputs, self.rs.outputs).resolve(self.flow.output)
            except Exception as exc:
                status, error = "failed", f"output: {exc}"
        elif status != "succeeded":
            failed = self.rs.failed
            first = failed[0] if failed else None
            err = self.errors.get(first) if first is not None else None
            error = self.sched.run_error(status, first, len(failed), err)  # type: ignore[arg-type]
        return status, error or "", output

    def check(self) -> None:
        got = self.client.hgetall(self.key("status"))
        want = self.expected()
        diff = {
            u: {"core": want.get(u), "lua": got.get(u)}
            for u in sorted(want.keys() | got.keys())
            if want.get(u) != got.get(u)
        }
        assert not diff, f"unit statuses differ: {diff}"
        # The queued units, each in its lane's todo set.
        todo: dict[str, str] = {}
        for lane in sorted(self.client.smembers(self.key("lanes"))):
            for u in self.client.zrange(self.store.todo_key(RUN_ID, lane), 0, -1):
                if got.get(u) == "queued":
                    assert u not in todo, f"{u} queued in two lanes"
                    todo[u] = lane
        queued = {u: self.lane(u) for u, s in want.items() if s == "queued"}
        assert todo == queued, f"queued units (unit: lane): core {queued}, lua {todo}"
        meta = self.client.hgetall(self.key("meta"))
        for lane in set(queued.values()):
            assert self.sender.pending[lane] > 0, f"units queued in {lane!r}, no token on its way"
        for lane, n in self.sender.pending.items():
            assert int(meta.get(f"tok:{lane}", 0)) == n, f"tokens of {lane!r}: {meta}"
        assert (meta.get("stop") or None) == self.rs.stop_reason, "stop reason"
        assert int(meta["unfinished"]) == self.rs.unfinished, "unfinished steps"
        status, error, output = self.expected_end()
        assert meta["status"] == status, f"run status: core {status}, lua {meta['status']}"
        if status == "running":
            return
        assert meta.get("error", "") == error, f"run error: core {error!r}, lua {meta['error']!r}"
        lua_output = json.loads(meta["output"]) if meta.get("output") else None
        assert lua_output == output, "run output"
        assert self.store.all_outputs(RUN_ID) == self.rs.outputs, "step outputs"


def _value(t: Terminal) -> Any:
    return json.loads(t.output_json) if t.output_json else None


def replay(flow: Flow, inputs: dict[str, Any], events: list[Event]) -> Twin:
    """Drive a run through `events`, comparing after each (what a failure prints)."""
    with redis_clock():
        twin = Twin(flow, inputs)
        twin.check()
        for event in events:
            twin.apply(event)
            twin.check()
    return twin


def replay_text(flow: Flow, inputs: dict[str, Any], events: list[Event]) -> str:
    lines = "\n".join(f"    {e!r}," for e in events)
    return (
        f"--- flow (Flow.from_yaml)\n{flow.to_yaml()}--- input\n{json.dumps(inputs)}\n"
        f"--- events (replay(flow, input, events))\n[\n{lines}\n]"
    )


# Generated flows -------------------------------------------------------------------
inputs_st = st.fixed_dictionaries(
    {
        "flag": st.booleans(),
        "n": st.integers(0, 3),
        "xs": st.lists(st.integers(0, 5), max_size=3),
        "ys": st.lists(st.integers(0, 5), max_size=2),
    }
)


@st.composite
def whens(draw: st.DrawFn, earlier: list[str]) -> str | None:
    kinds = ["none"] * 5 + ["flag", "not_flag", "n"] + (["dep"] if earlier else [])
    if draw(st.integers(0, 19)) == 19:  # rarely: under fail_fast they end most runs at once
        kinds = ["nope", "field"] if earlier else ["nope"]
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    if kind == "flag":
        return "input.flag"
    if kind == "not_flag":
        return "not input.flag"
    if kind == "n":
        return f"input.n > {draw(st.integers(0, 2))}"
    if kind == "nope":  # cannot be evaluated: the step fails without running
        return "input.nope == 1"
    dep = draw(st.sampled_from(earlier))
    if kind == "dep":  # a dependency that did not succeed reads as null: false
        return f"steps.{dep} > {draw(st.integers(0, 4))}"
    # A field of a number (or of a map's list) cannot be looked up: the step fails
    # when the dependency succeeded, and is skipped when it did not (null.v is null).
    return f"steps.{dep}.v == 1"


@st.composite
def flows(draw: st.DrawFn) -> Flow:
    n = draw(st.one_of(st.integers(2, 6), st.integers(2, 14)))  # small ones more often
    steps = []
    for i in range(n):
        earlier = [f"s{j}" for j in range(i)]
        deps = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if i else []
        inputs: dict[str, Any] = {}
        depends_on = []
        for k, d in enumerate(deps):
            if draw(st.booleans()):
                inputs[f"a{k}"] = f"$steps.{d}"
            else:
                depends_on.append(d)
        steps.append(
            Step(
                id=f"s{i}",
                tool="t",
                inputs=inputs,
                depends_on=depends_on,
                when=draw(whens(earlier)),
                trigger=draw(st.sampled_from(TRIGGERS)),
                map=draw(st.sampled_from([None, None, None, None, "$input.xs", "$input.ys"])),
                queue=draw(st.sampled_from([None, None, "other"])),
            )
        )
    return Flow(
        name="diff",
        steps=steps,
        on_failure=draw(st.sampled_from(["continue", "fail_fast"])),
        output=draw(st.sampled_from([None, f"$steps.s{n - 1}"])),
    )


def draw_event(twin: Twin, data: st.DataObject) -> Event:
    # Now and then (not when shrunk: 0 is the common case) a settle comes twice.
    if twin.terminals and data.draw(st.integers(0, 11)) == 11:
        return ("again", data.draw(st.sampled_from(sorted(twin.terminals))))
    starts, finishes = twin.options()
    choices = [("start", u) for u in starts] + [("finish", u) for u in finishes]
    assert choices, "the run is stuck: nothing queued or running, and it has not ended"
    kind, unit = data.draw(st.sampled_from(choices))
    if kind == "start":
        return ("start", unit, data.draw(st.integers(0, 3)) if twin.is_map(unit) else 0)
    outcomes = ["succeeded", "succeeded", "succeeded", "failed"]  # runs that go on a while
    if twin.claims[unit].attempt < MAX_ATTEMPTS:
        outcomes.append("retry")
    if twin.caught(unit):
        outcomes.append("cancelled")
    outcome = data.draw(st.sampled_from(outcomes))
    value = data.draw(st.integers(0, 5)) if outcome == "succeeded" else None
    return ("finish", unit, outcome, value, data.draw(st.booleans()), data.draw(st.booleans()))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # No `explain` phase: tracing every line of fakeredis' Lua bridge takes minutes.
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(flow=flows(), inputs=inputs_st, data=st.data())
def test_lua_scripts_match_the_core(
    flow: Flow, inputs: dict[str, Any], data: st.DataObject
) -> None:
    stop_at = data.draw(st.one_of(st.none(), st.integers(0, 10)), label="stop_at")
    reason = data.draw(st.sampled_from(STOPS), label="reason")
    events: list[Event] = []
    twin: Twin | None = None
    try:
        with redis_clock():
            twin = Twin(flow, inputs)
            twin.check()
            while not twin.finished:
                assert len(events) < MAX_EVENTS, "too many events"
                stop = len(events) == stop_at
                event = ("stop", reason) if stop else draw_event(twin, data)
                events.append(event)
                twin.apply(event)
                twin.check()
            events.append(("stop", "cancelled"))  # too late: changes nothing
            twin.apply(events[-1])
            twin.check()
    except Exception as exc:
        text = replay_text(flow, inputs, events)
        note(text)
        if isinstance(exc, AssertionError):
            raise AssertionError(f"{exc}\n{text}") from None
        raise


# Disagreements it found (fixed), each in its smallest case --------------------------------
NO_INPUT = {"flag": False, "n": 0, "xs": [], "ys": []}


def case(yaml: str) -> Flow:
    return Flow.from_yaml("name: diff\nsteps:\n" + yaml)


def test_a_cascade_is_decided_in_the_same_waves_under_fail_fast() -> None:
    """Roots s0 (skipped) and s2 (its `when` fails) are decided together; s0's dependent
    s1 comes in the next wave, after s2's failure stopped the run: cancelled on both
    sides (the core once decided it depth first, before s2, and skipped it)."""
    flow = case(
        "- {id: s0, tool: t, when: input.flag}\n"
        "- {id: s1, tool: t, depends_on: [s0]}\n"
        "- {id: s2, tool: t, when: input.nope == 1}\n"
    )
    twin = replay(flow, NO_INPUT, [])
    assert twin.rs.status == {"s0": "skipped", "s1": "cancelled", "s2": "failed"}


def test_a_cascade_names_the_same_first_failure_under_continue() -> None:
    flow = case(
        "- {id: s0, tool: t, when: input.flag}\n"
        "- {id: s1, tool: t, when: input.nope == 1}\n"
        "- {id: s2, tool: t, depends_on: [s0], when: input.nope == 1, trigger: none_failed}\n"
    ).model_copy(update={"on_failure": "continue"})
    twin = replay(flow, NO_INPUT, [])
    assert twin.rs.failed == ["s1", "s2"]


def test_a_unit_a_stop_caught_is_carried_forward_as_cancelled() -> None:
    """s1 fails (a fail-fast stop); s0 then ends succeeded with 1 and is recorded
    cancelled: the survivor s2 (`when: steps.s0 > 0`, all_done) sees s0 cancelled, not
    succeeded with 1, and is skipped on both sides."""
    flow = case(
        "- {id: s0, tool: t}\n"
        "- {id: s1, tool: t}\n"
        "- {id: s2, tool: t, when: steps.s0 > 0, trigger: all_done}\n"
    )
    events: list[Event] = [
        ("start", "s0", 0),
        ("start", "s1", 0),
        ("finish", "s1", "failed", None, False, False),
        ("finish", "s0", "succeeded", 1, False, False),
    ]
    twin = replay(flow, NO_INPUT, events)
    assert twin.rs.status == {"s0": "cancelled", "s1": "failed", "s2": "skipped"}


# A few runs written out, whatever the generator happens to reach ------------------------
def test_a_fail_fast_stop_spares_cleanup_and_decides_it_after() -> None:
    flow = case(
        "- {id: s0, tool: t}\n"
        "- {id: s1, tool: t}\n"
        "- {id: s2, tool: t, depends_on: [s0, s1]}\n"
        "- {id: s3, tool: t, depends_on: [s2], trigger: all_done}\n"
        "- {id: s4, tool: t, depends_on: [s3], when: steps.s3 > 2, trigger: all_done}\n"
    )
    twin = replay(
        flow,
        NO_INPUT,
        [
            ("start", "s0", 0),
            ("start", "s1", 0),
            ("finish", "s1", "failed", None, False, False),
            ("finish", "s0", "cancelled", None, False, False),
            ("start", "s3", 0),
            ("finish", "s3", "succeeded", 3, True, True),
            ("finish", "s4", "succeeded", 5, False, False),
        ],
    )
    assert twin.rs.status == {
        "s0": "cancelled",
        "s1": "failed",
        "s2": "cancelled",
        "s3": "succeeded",
        "s4": "succeeded",
    }


def test_a_cancel_catches_a_map_and_a_retry() -> None:
    flow = case(
        "- {id: s0, tool: t, map: $input.xs}\n"
        "- {id: s1, tool: t}\n"
        "- {id: s2, tool: t, depends_on: [s0, s1], trigger: all_done}\n"
    )
    twin = replay(
        flow,
        {**NO_INPUT, "xs": [1, 2, 3]},
        [
            ("start", "s0", 1),
            ("start", "s1", 0),
            ("finish", "s1", "retry", None, False, False),
            ("finish", "s0[0]", "succeeded", 4, False, False),
            ("start", "s0[1]", 0),
            ("stop", "cancelled"),
            ("finish", "s0[1]", "succeeded", 5, False, False),
        ],
    )
    assert twin.rs.status == {"s0": "cancelled", "s1": "cancelled", "s2": "cancelled"}
    assert twin.client.hget(twin.key("meta"), "status") == "cancelled"
