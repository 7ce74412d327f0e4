"""What a step's claim and completion carry to and from the store's scripts.

A worker claims a step (claim.lua) before running it and records its terminal status
(complete.lua) after; these are the values of those two transitions, apart from the
store that knows where they live in Redis.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to a claim: `kind` is `ok` or why the step is not this message's to run."""

    kind: str
    attempt: int = 0
    queued_at: str | None = None
    started_at: str | None = None
    lost_attempt: int = 0
    outputs: dict[str, Any] | None = None
    detail: str = ""
    slot: str | None = None  # its holder name in the tool's semaphore, if it took a slot


@dataclass(frozen=True, slots=True)
class Completion:
    """What recording a terminal status did."""

    applied: bool
    unfinished: int = -1
    stop: str = ""
    ready: tuple[str, ...] = ()
    clean: frozenset[str] = frozenset()  # ready steps whose dependencies all succeeded
    then: tuple[Claim, ...] = ()  # the answers to the `NextClaim`s asked


@dataclass(frozen=True, slots=True)
class Terminal:
    """A terminal status to record for a step (see `RedisStore.complete`)."""

    step: str
    status: str
    output_json: str
    record: dict[str, Any]
    at: str
    worker: str = ""
    attempt: int | None = None
    attempt_json: str = ""
    error: str = ""


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
    needs: tuple[str, ...]


def new_token() -> str:
    """A label for one claim, to tell its holder apart from the next one's.

    Not a secret (whoever can write Redis can write claims): a pseudo-random number
    costs no system call, where `secrets` would give up the GIL under contention for each
    step. `random` reseeds in a forked worker process.
    """
    return f"{random.getrandbits(48):012x}"


def parse_claim(r: list[Any], needs: tuple[str, ...]) -> Claim:
    """A claim script's reply; `needs` names the outputs it carries, in order."""
    if r[0] != "ok":
        return Claim(kind=r[0], detail=r[1] if len(r) > 1 else "")
    outputs = {s: json.loads(v) for s, v in zip(needs, r[5:], strict=True) if v != ""}
    return Claim("ok", int(r[1]), r[2] or None, r[3] or None, int(r[4]), outputs)
