"""The distributed backend, client side: create runs in Redis, send roots, read events."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import dramatiq
import redis

from executor.backends.redis.coordinator import Coordinator
from executor.backends.redis.messages import ACTOR_NAME, Token
from executor.backends.redis.run_context import RunContext
from executor.backends.redis.store import DEFAULT_TTL, RedisStore, RunData
from executor.backends.redis.urls import is_sentinel, open_redis
from executor.backends.redis.wakeup import WakingRedisBroker
from executor.errors import DagrelayError, RunNotFoundError
from executor.handle import RunHandle
from executor.model.dag import Dag
from executor.model.flow import Flow
from executor.model.spec import FlowSpec
from executor.model.tools import Tool, ToolRegistry
from executor.model.validation import validate_flow
from executor.observability.tracing import current_context as trace_context
from executor.result import ExecutionResult
from executor.run.events import RunEvent
from executor.run.records import TERMINAL_RUN, Attempt, RunStatus, StepRecord, summarize
from executor.run.rerun import plan_rerun

_PASSWORD = re.compile(r"^([a-z0-9+.-]*://[^:/@]*:)[^/]*@", re.IGNORECASE)
# A token message's actor only claims (the attempts run after it returns): Dramatiq's
# time limit has nothing to interrupt.
NO_TIME_LIMIT_MS = 7 * 24 * 3600 * 1000
# A client following a run rides out a Redis outage (a restart) for this long.
RECONNECT_SECONDS = 60.0
_T = TypeVar("_T")


def redact(url: str) -> str:
    """A Redis URL with its password replaced, safe for logs and errors.

    Textual, so that even a URL that does not parse (a bad port) is redacted.
    """
    return _PASSWORD.sub(r"\1***@", url)


def connect(url: str) -> redis.Redis:
    """A decoded-strings client for run state, checked with a PING.

    Raises:
        DagrelayError: Redis is unreachable, naming the (redacted) URL.
    """
    try:
        client = open_redis(
            url, decode_responses=True, health_check_interval=30, socket_connect_timeout=5
        )
        client.ping()
    except (redis.RedisError, ValueError, OSError) as exc:
        raise DagrelayError(f"cannot reach Redis at {redact(url)}: {exc}") from None
    return client


class BrokerSender:
    """Sends token messages (`run_step(run_id, lane, units)`) through a Dramatiq broker."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker

    def send_many(self, tokens: list[Token]) -> None:
        batch: list[tuple[dramatiq.Message[Any], int | None]] = []
        traced = trace_context()  # W3C traceparent of the active span, if any: workers join
        for t in tokens:
            message: dramatiq.Message[Any] = dramatiq.Message(
                queue_name=t.lane,
                actor_name=ACTOR_NAME,
                args=(t.run_id, t.lane, t.units),
                kwargs={},
                options={"time_limit": NO_TIME_LIMIT_MS, "max_retries": 0, **traced},
            )
            batch.append((message, t.delay_ms or None))
        if isinstance(self.broker, WakingRedisBroker):
            self.broker.enqueue_many(batch)
        else:
            for message, delay in batch:
                self.broker.enqueue(message, delay=delay)


class RedisBackend:
    """Submits runs for workers and follows them through Redis."""

    def __init__(
        self,
        url: str,
        registry: ToolRegistry,
        namespace: str = "dagrelay",
        result_ttl: int = DEFAULT_TTL,
        client: redis.Redis | None = None,
        broker: dramatiq.Broker | None = None,
    ) -> None:
        self.url = url
        self.registry = registry
        self.client = client if client is not None else connect(url)
        self.store = RedisStore(self.client, namespace, result_ttl)
        if broker is None:
            if is_sentinel(url):  # the broker follows the master through the sentinels
                broker = WakingRedisBroker(client=open_redis(url), middleware=[])
            else:
                broker = WakingRedisBroker(url=url, middleware=[])
        self.broker = broker
        self.coordinator = Coordinator(self.store, BrokerSender(broker), self._tool_of)

    def _tool_of(self, name: str) -> Tool | None:
        return self.registry.get(name) if name in self.registry else None

    def submit(self, dag: Dag, inputs: Any, run_id: str) -> RedisRunHandle:
        flow = dag.flow
        now = datetime.now(UTC)
        meta = {
            "flow": flow.model_dump_json(),
            "inputs": json.dumps(inputs),
            "flow_name": flow.name,
            "flow_version": flow.version,
            "status": "running",
            "submitted_at": now.isoformat(),
            "started_at": now.isoformat(),
        }
        deadline = time.time() + flow.timeout if flow.timeout else None
        ctx = RunContext.build(run_id, flow, inputs, dag)
        meta.update(ctx.script_fields())
        try:
            self.store.create_run(
                run_id, meta, list(dag.steps), {s: len(d) for s, d in dag.deps.items()}, deadline
            )
        except ValueError as exc:
            raise DagrelayError(str(exc)) from None
        self.coordinator.remember(ctx)
        self.coordinator.start(ctx)
        return RedisRunHandle(self, run_id)

    def rerun(self, run_id: str, flow: FlowSpec | None, from_steps: list[str]) -> RedisRunHandle:
        """Run a finished run's failed and unfinished steps again, in place (same id).

        Raises:
            RunNotFoundError: no such run.
            DagrelayError: the run is not finished, `flow` is not its flow, or there is
                nothing to run again.
        """
        data = self.store.read_run(run_id)
        stored = Flow.model_validate_json(data.meta["flow"])
        if flow is not None and flow.model_dump() != stored.model_dump():
            raise DagrelayError(f"run {run_id} is of another flow (its own is {stored.name!r})")
        dag = validate_flow(stored, None)
        keep, again = plan_rerun(run_id, dag, data.meta.get("status", ""), data.status, from_steps)
        waits = {s: sum(1 for d in dag.deps[s] if d not in keep) for s in again}
        made: dict[str, int] = {}
        for field in data.attempts:
            unit, _, number = field.rpartition(":")
            if unit in waits:
                made[unit] = max(made.get(unit, 0), int(number))
        items = {s: _item_count(data.status, s) for s in again if dag.steps[s].map is not None}
        plan = [(s, waits[s], made.get(s, 0), items.get(s, 0)) for s in again]
        deadline = time.time() + stored.timeout if stored.timeout else None
        at = datetime.now(UTC).isoformat()
        first = self.store.rerun(run_id, plan, at, deadline)
        if first is None:
            status = self.store.run_meta(run_id, "status").get("status")
            raise DagrelayError(f"run {run_id} is {status}: only a finished run can be rerun")
        ctx = RunContext.build(run_id, stored, json.loads(data.meta["inputs"]), dag)
        self.coordinator.remember(ctx)
        self.coordinator.resolve(ctx, [s for s in again if waits[s] == 0])
        return RedisRunHandle(self, run_id, since=first)

    def close(self) -> None:
        self.client.close()
        self.broker.close()

    def get(self, run_id: str) -> RedisRunHandle:
        self.store.run_meta(run_id, "status")  # raises RunNotFoundError
        return RedisRunHandle(self, run_id)

    def build_result(self, run_id: str) -> ExecutionResult:
        data = self.store.read_run(run_id)
        ctx = self.coordinator.context(run_id)
        return result_from(run_id, data, ctx)


class RedisRunHandle(RunHandle):
    """A run stored in Redis; works from any process that can reach it."""

    def __init__(self, backend: RedisBackend, run_id: str, since: str | None = None) -> None:
        self._backend = backend
        self.run_id = run_id
        self._since = since  # the first event of the run's latest pass (a rerun)

    def status(self) -> RunStatus:
        return self._backend.store.run_meta(self.run_id, "status")["status"]  # type: ignore[return-value]

    def result(self) -> ExecutionResult:
        return self._backend.build_result(self.run_id)

    def cancel(self) -> None:
        self._backend.coordinator.stop(self.run_id, "cancelled")

    def wait(self, timeout: float | None = None) -> ExecutionResult:
        # Blocks on the run's one-entry end stream: no wake-up per step event.
        store = self._backend.store
        for _ in self._follow(timeout, lambda block: store.wait_end(self.run_id, block)):
            break
        return self._reconnecting(self.result)

    def events(self, timeout: float | None = None) -> Iterator[RunEvent]:
        store = self._backend.store
        if self._since is None:  # the events of the latest pass: a rerun's start on
            self._since = store.run_meta(self.run_id, "status", "pass_from").get("pass_from")
        last = self._since or "0-0"

        def read(block: int | None) -> list[tuple[str, dict[str, str]]]:
            return store.read_events(self.run_id, last, block)

        for entries in self._follow(timeout, read):
            for entry_id, fields in entries:
                last = entry_id
                event = _event(self.run_id, fields)
                yield event
                if event.step_id is None:
                    return

    def _follow(self, timeout: float | None, read: Callable[[int | None], Any]) -> Iterator[Any]:
        """Yield what `read` (blocking up to a given number of ms) returns until the caller
        stops, the run is found finished, or `timeout` passes (TimeoutError)."""
        store = self._backend.store
        deadline = None if timeout is None else time.monotonic() + timeout
        run_deadline = self._reconnecting(self._run_deadline)
        while True:
            block: int | None = 1000
            if deadline is not None:
                left = deadline - time.monotonic()
                # Out of time: one last non-blocking read, so a finished run still answers.
                block = max(1, min(1000, int(left * 1000))) if left > 0 else None
            to_deadline = None if run_deadline is None else run_deadline - time.time()
            if block is not None and to_deadline is not None and to_deadline > 0:
                # Wake at the run's deadline to enforce it on time, sweeper or not.
                block = max(1, min(block, int(to_deadline * 1000) + 5))
            got = self._reconnecting(partial(read, block))
            if got:
                yield got
                continue
            if block is None:
                raise TimeoutError(
                    f"run {self.run_id} did not finish within {timeout}s (it is still running)"
                )
            # Blocking read timed out: make sure the run still exists (persistence off and
            # Redis restarted means its state is gone: say so, never hang), and enforce its
            # timeout even when no worker sweeper is alive.
            try:
                meta = self._reconnecting(lambda: store.run_meta(self.run_id, "status"))
            except RunNotFoundError:
                raise RunNotFoundError(
                    f"run {self.run_id}: its state is gone from Redis at "
                    f"{redact(self._backend.url)} (Redis restarted without persistence, "
                    "or the keys were deleted or expired); it cannot finish"
                ) from None
            if meta.get("status") in TERMINAL_RUN:
                return
            if run_deadline is not None and time.time() > run_deadline:
                self._backend.coordinator.stop(self.run_id, "timed_out")

    def _reconnecting(self, call: Callable[[], _T]) -> _T:
        """A Redis call that, while Redis is unreachable (a restart), retries with
        backoff for up to `RECONNECT_SECONDS`, then raises a `DagrelayError`."""
        delay, since = 0.05, time.monotonic()
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() - since > RECONNECT_SECONDS:
                    raise DagrelayError(
                        f"lost Redis at {redact(self._backend.url)} for over "
                        f"{RECONNECT_SECONDS:.0f}s while following run {self.run_id}: "
                        f"{redact(str(exc))}"
                    ) from None
                time.sleep(delay)
                delay = min(2 * delay, 1.0)

    def _run_deadline(self) -> float | None:
        score = self._backend.client.zscore(self._backend.store.deadlines_key, self.run_id)
        return float(score) if score is not None else None


def _item_count(statuses: dict[str, str], step: str) -> int:
    """How many items a map step had in the run's last pass."""
    prefix = f"{step}["
    return sum(1 for unit in statuses if unit.startswith(prefix) and unit.endswith("]"))


def _event(run_id: str, f: dict[str, str]) -> RunEvent:
    at = datetime.fromisoformat(f["at"]) if f.get("at") else datetime.now(UTC)
    attempt = f.get("attempt")
    return RunEvent(
        run_id=run_id,
        step_id=f.get("step") or None,
        status=f.get("status", ""),
        at=at,
        attempt=int(attempt) if attempt else None,
        error=f.get("error") or None,
        worker=f.get("worker") or None,
    )


def result_from(run_id: str, data: RunData, ctx: RunContext) -> ExecutionResult:
    """Assemble an `ExecutionResult` from a run's stored state."""
    meta = data.meta
    attempts: dict[str, list[Attempt]] = {}
    for field, raw in data.attempts.items():
        unit, _, _ = field.rpartition(":")
        attempts.setdefault(unit, []).append(Attempt.model_validate_json(raw))
    items: dict[str, list[str]] = {}
    for unit in data.status:
        if unit.endswith("]"):
            parent, _, index = unit[:-1].partition("[")
            items.setdefault(parent, []).append(index)
    steps: dict[str, StepRecord] = {}
    for sid, step in ctx.dag.steps.items():
        record = _unit_record(sid, step.tool, data, attempts)
        if step.map is not None and (sid in items or record.attempts):
            indexes = sorted(items.get(sid, []), key=int)
            record.items = [_unit_record(f"{sid}[{i}]", step.tool, data, attempts) for i in indexes]
        steps[sid] = record
    status = meta.get("status", "running")
    wall = meta.get("wall_time")
    result = ExecutionResult(
        run_id=run_id,
        flow_name=meta.get("flow_name", ctx.dag.flow.name),
        flow_version=meta.get("flow_version", ctx.dag.flow.version),
        status=status,
        inputs=ctx.inputs,
        output=json.loads(meta["output"]) if meta.get("output") else None,
        error=meta.get("error") or None,
        steps=steps,
        submitted_at=meta.get("submitted_at"),
        started_at=meta.get("started_at"),
        finished_at=meta.get("finished_at") or None,
        wall_time=float(wall) if wall else None,
    )
    if status in TERMINAL_RUN:
        summarize(result, ctx.dag.deps, ctx.dag.topological_order())
    return result


def _unit_record(
    unit: str, tool: str, data: RunData, attempts: dict[str, list[Attempt]]
) -> StepRecord:
    rec_raw = data.records.get(unit)
    base: dict[str, Any] = json.loads(rec_raw) if rec_raw else {}
    base.update(step_id=unit, tool=tool, status=data.status.get(unit, "pending"))
    base.pop("items", None)
    base.setdefault("queued_at", data.times.get(f"{unit}:q"))
    base.setdefault("started_at", data.times.get(f"{unit}:s"))
    base["attempts"] = sorted(attempts.get(unit, []), key=lambda a: a.number)
    if base.get("error") is None and base["status"] == "cancelled" and base["attempts"]:
        # Cancelled while it waited to retry: its error is its final attempt's.
        base["error"] = base["attempts"][-1].error
    if unit in data.outputs:
        base["output"] = json.loads(data.outputs[unit])
    return StepRecord.model_validate(base)
