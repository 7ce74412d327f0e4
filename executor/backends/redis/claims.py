"""What the store's scripts take and answer: claims, completions, takes, expansions.

A worker claims a unit (a step, or an item of a map step) before running it, and
settles it after (complete.lua); these are the values of those transitions, apart from
the store that knows where they live in Redis.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to a claim: `kind` is `ok`, or why the unit is not the caller's to run."""

    kind: str
    unit: str = ""
    attempt: int = 0
    queued_at: str | None = None
    started_at: str | None = None
    outputs: dict[str, Any] | None = None
    item: Any = None  # a map item's value
    trace: str = ""  # W3C traceparent of what queued it (its span's parent)
    detail: str = ""
    slot: str | None = None  # its holder name in the tool's semaphore, if it took a slot
    base: int = 0  # attempts earlier passes of the run made (a rerun): `attempt` goes on


@dataclass(frozen=True, slots=True)
class Completion:
    """What settling an attempt did."""

    applied: int  # 1 recorded, 2 queued for a retry, 0 not (a duplicate), -1 unknown
    unfinished: int = -1
    stop: str = ""
    ready: tuple[str, ...] = ()
    clean: frozenset[str] = frozenset()  # ready steps whose dependencies all succeeded
    then: tuple[Claim, ...] = ()  # the answers to the `NextClaim`s asked
    map_status: str = ""  # an item's completion ended its map with this status
    retry_tokens: int = 0  # a retry was queued: tokens to send (delayed)
    recorded_as: str = ""  # the status recorded (`cancelled` when a stop caught it)

    @property
    def recorded(self) -> bool:
        return self.applied == 1


@dataclass(frozen=True, slots=True)
class Terminal:
    """An attempt's outcome to settle (see `RedisStore.complete_many`).

    `retry_ms` set: the retry policy allows another attempt after that long (the script
    queues it, unless the run's stop caught it: then it is recorded cancelled).
    """

    unit: str
    status: str
    output_json: str
    record: dict[str, Any]
    at: str
    worker: str = ""
    attempt: int | None = None
    attempt_json: str = ""
    retry_ms: int | None = None
    lane: str = ""


@dataclass(frozen=True, slots=True)
class NextClaim:
    """Claim this dependent in place in the same round trip as a successful completion of
    one of its dependencies, if that makes it ready with every dependency succeeded: a
    hop in one round trip instead of two."""

    step: str
    token: str
    lease_ms: int
    started_at: str
    worker: str
    lane: str


@dataclass(frozen=True, slots=True)
class Take:
    """What taking units from a lane's todo set did."""

    claims: tuple[Claim, ...]
    tokens: int  # token messages to send now
    delay_ms: int  # send one token this much later (-1: none)
    passed: tuple[str, ...]  # due units of tools with a concurrency limit, left queued


@dataclass(frozen=True, slots=True)
class Expansion:
    """What turning a map step into its items did."""

    kind: str  # ok, stale or stopped
    tokens: int = 0
    claims: tuple[Claim, ...] = ()
    map_status: str = ""  # the map ended at once (no item to run)
    ready: tuple[str, ...] = ()
    clean: frozenset[str] = field(default_factory=frozenset)
    unfinished: int = -1


def new_token() -> str:
    """A label for one claim, to tell its holder apart from the next one's.

    Not a secret (whoever can write Redis can write claims): a pseudo-random number
    costs no system call, where `secrets` would give up the GIL under contention for each
    step. `random` reseeds in a forked worker process.
    """
    return f"{random.getrandbits(48):012x}"


def parse_claim(r: list[Any]) -> Claim:
    """A claim's reply (see `claim_unit` in lib.lua)."""
    if r[0] != "ok":
        return Claim(kind=r[0], unit=r[1], detail=r[2] if len(r) > 2 else "")
    n = int(r[6])
    outputs = {}
    for i in range(7, 7 + 2 * n, 2):
        if r[i + 1] != "":
            outputs[r[i]] = json.loads(r[i + 1])
    item = json.loads(r[7 + 2 * n]) if len(r) > 7 + 2 * n else None
    attempt, _, base = str(r[2]).partition("/")
    return Claim(
        "ok",
        r[1],
        int(attempt),
        r[3] or None,
        r[4] or None,
        outputs,
        item,
        r[5] or "",
        base=int(base or 0),
    )


def parse_ready(ready: list[str]) -> tuple[tuple[str, ...], frozenset[str]]:
    """Ready dependents (`id` or `id|x`) as ids, and those whose dependencies all succeeded."""
    ids = tuple(d.removesuffix("|x") for d in ready)
    return ids, frozenset(d for d in ready if not d.endswith("|x"))
