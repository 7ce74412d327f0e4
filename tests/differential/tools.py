"""The tools of the differential fuzz: behaviour fully determined by their inputs.

Workers load this module with `dagrelay worker --tools tests.differential.tools`; the
embedded backend and the reference interpreter import it directly. So it imports only
`executor`, `redis` and the standard library, and keeps no state a run could see in
Python globals, except the attempt counters below.

What a call does is `plan(inputs, attempt)`, a pure function the reference interpreter
calls too: the tools run the plan, the reference simulates it. A call:

* counts its attempt: with a `key` (a literal token the generator writes into the step),
  attempt numbers come from a counter keyed by `(nonce, key, index)`; without one every
  call is attempt 1. `nonce` comes from the run's input (`$input.nonce`), so the same
  flow run on several backends counts separately. The counter lives in Redis when
  `DAGRELAY_FUZZ_COUNTER_URL` is set (workers, and the embedded backend in the tests:
  both count the same way), else in this process (embedded only);
* sleeps `seconds`; a failing attempt then sleeps `hang` more (a step `timeout` catches
  it) and raises `error` (`ValueError` or `Transient`) while `attempt <= fail_before`
  (and, in a map, only for items whose index is in `fail_items`, when given);
* otherwise returns `{"tag", "n", "xs", "h"}`: a digest of `parts` (the resolved
  references), a small int `n`, and a list `xs` of `length` small ints — something to
  reference (`$steps.x.n`, `$steps.x.xs.0`) and to map over (`map: $steps.x.xs`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from executor import RetryPolicy, ToolRegistry, tool

registry = ToolRegistry()

#: Environment variable naming the Redis that holds attempt counters.
COUNTER_URL_ENV = "DAGRELAY_FUZZ_COUNTER_URL"
#: Counters expire: a soak leaves nothing behind for long.
COUNTER_TTL = 3600


class Transient(Exception):
    """The error retry policies with `retry_on=("Transient",)` retry."""


ERRORS: dict[str, type[Exception]] = {"ValueError": ValueError, "Transient": Transient}


# The plan of a call: shared by the tools and the reference interpreter ----------------
@dataclass(frozen=True)
class AttemptPlan:
    """What one attempt does: sleep `seconds`, then raise `error` or return `output`."""

    seconds: float
    error: str | None
    output: Any


def digest(parts: Any) -> str:
    """A short, stable digest of JSON data (outputs stay small however deep the DAG)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def output_of(tag: str, parts: Any, length: int) -> dict[str, Any]:
    h = digest([tag, parts])
    return {
        "tag": tag,
        "n": int(h[:4], 16) % 10,
        "xs": [int(h[i], 16) % 7 for i in range(min(length, 8))],
        "h": h,
    }


def plan(inputs: dict[str, Any], attempt: int) -> AttemptPlan:
    """The attempt number `attempt` (1-based) of a call with these resolved inputs."""
    seconds = float(inputs.get("seconds", 0.0))
    fail_items = inputs.get("fail_items")
    index = inputs.get("index")
    fails = attempt <= int(inputs.get("fail_before", 0))
    if fails and fail_items is not None:
        fails = index in fail_items
    if fails:
        return AttemptPlan(
            seconds + float(inputs.get("hang", 0.0)), str(inputs.get("error", "ValueError")), None
        )
    out = output_of(str(inputs.get("tag", "")), inputs.get("parts"), int(inputs.get("length", 0)))
    return AttemptPlan(seconds, None, out)


# Attempt counters ------------------------------------------------------------------------
_local_counts: dict[str, int] = {}
_local_lock = threading.Lock()
_clients: dict[str, Any] = {}


def _redis(url: str) -> Any:
    client = _clients.get(url)
    if client is None:
        import redis

        client = _clients[url] = redis.Redis.from_url(url)
    return client


def next_attempt(nonce: str, key: str | None, index: int | None) -> int:
    """This call's attempt number: 1 without a key, else the counter's new value."""
    if key is None:
        return 1
    name = f"dagrelay-fuzz:{nonce}:{key}:{index if index is not None else '-'}"
    url = os.environ.get(COUNTER_URL_ENV)
    if url:
        client = _redis(url)
        pipe = client.pipeline()
        pipe.incr(name)
        pipe.expire(name, COUNTER_TTL)
        return int(pipe.execute()[0])
    with _local_lock:
        _local_counts[name] = _local_counts.get(name, 0) + 1
        return _local_counts[name]


def _inputs(**kwargs: Any) -> dict[str, Any]:
    return kwargs


def _raise(p: AttemptPlan, key: str | None, attempt: int) -> None:
    if p.error is not None:
        raise ERRORS[p.error](f"attempt {attempt} of {key or 'call'} fails")


# Tools -------------------------------------------------------------------------------
@tool(registry=registry)
async def work(
    tag: str = "",
    parts: Any = None,
    length: int = 0,
    seconds: float = 0.0,
    hang: float = 0.0,
    fail_before: int = 0,
    error: str = "ValueError",
    key: str | None = None,
    nonce: str = "",
    index: int | None = None,
    fail_items: list[int] | None = None,
) -> Any:
    """Async: sleep, then fail or return a digest of `parts` (see the module doc)."""
    args = _inputs(
        tag=tag,
        parts=parts,
        length=length,
        seconds=seconds,
        hang=hang,
        fail_before=fail_before,
        error=error,
        index=index,
        fail_items=fail_items,
    )
    n = next_attempt(nonce, key, index)
    p = plan(args, n)
    if p.seconds > 0:
        await asyncio.sleep(p.seconds)
    _raise(p, key, n)
    return p.output


@tool(registry=registry)
def work_sync(
    tag: str = "",
    parts: Any = None,
    length: int = 0,
    seconds: float = 0.0,
    hang: float = 0.0,
    fail_before: int = 0,
    error: str = "ValueError",
    key: str | None = None,
    nonce: str = "",
    index: int | None = None,
    fail_items: list[int] | None = None,
) -> Any:
    """The same as `work`, as a sync tool (runs in a thread)."""
    args = _inputs(
        tag=tag,
        parts=parts,
        length=length,
        seconds=seconds,
        hang=hang,
        fail_before=fail_before,
        error=error,
        index=index,
        fail_items=fail_items,
    )
    n = next_attempt(nonce, key, index)
    p = plan(args, n)
    if p.seconds > 0:
        time.sleep(p.seconds)
    _raise(p, key, n)
    return p.output


@tool(registry=registry, retry=RetryPolicy(max_attempts=3))
async def work_retry3(
    tag: str = "",
    parts: Any = None,
    length: int = 0,
    seconds: float = 0.0,
    hang: float = 0.0,
    fail_before: int = 0,
    error: str = "ValueError",
    key: str | None = None,
    nonce: str = "",
    index: int | None = None,
    fail_items: list[int] | None = None,
) -> Any:
    """`work` with a tool-level default retry policy (3 attempts, any error)."""
    args = _inputs(
        tag=tag,
        parts=parts,
        length=length,
        seconds=seconds,
        hang=hang,
        fail_before=fail_before,
        error=error,
        index=index,
        fail_items=fail_items,
    )
    n = next_attempt(nonce, key, index)
    p = plan(args, n)
    if p.seconds > 0:
        await asyncio.sleep(p.seconds)
    _raise(p, key, n)
    return p.output
