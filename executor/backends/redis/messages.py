"""Token messages: what the coordinator puts on the broker and a worker's actor receives.

A message names a run and a lane, never a step or data: it tells a worker that units of
the run wait in that lane's todo set in Redis, and how many it may take for it. A lane
is a Dramatiq queue: a step's queue for sync tools, `QUEUE.async` for async ones, so
that a worker fetches no more of either than it has slots to start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

DEFAULT_QUEUE = "dagrelay"
ACTOR_NAME = "run_step"
ASYNC_SUFFIX = ".async"

# Units a token stands for: at most this many, and at least this many tokens per
# fan-out, so that every worker gets a share.
PER_TOKEN_MAX = 64
TOKENS_MIN = 8


def lane_of(queue: str, is_async: bool) -> str:
    """The Dramatiq queue of a step queue's sync or async lane."""
    return queue + ASYNC_SUFFIX if is_async else queue


def lanes_of(queues: tuple[str, ...] | list[str]) -> list[str]:
    """Every lane a worker serving `queues` consumes."""
    return [lane for q in queues for lane in (q, q + ASYNC_SUFFIX)]


def is_async_lane(lane: str) -> bool:
    return lane.endswith(ASYNC_SUFFIX)


#: Units a worker always may start in place of those one completion makes ready.
LOCAL_MIN = 8


def per_token(ready: int) -> int:
    """Units a token stands for when `ready` units are queued at once."""
    return max(1, min(PER_TOKEN_MAX, ready // TOKENS_MIN))


def local_share(ready: int) -> int:
    """Of `ready` units made ready at once, how many the worker that made them ready
    may start in place (into its free slots): a few always (a token's round trip to
    another worker costs more than starting them here), what one token carries for a
    wide fan. The rest go out in tokens at once, so the other workers start theirs
    while it starts its own."""
    return max(min(ready, LOCAL_MIN), per_token(ready))


@dataclass(frozen=True, slots=True)
class Token:
    """A token message: a run, a lane, how many units it may take, and when."""

    run_id: str
    lane: str
    units: int = 1
    delay_ms: int | None = None


class Sender(Protocol):
    """Puts token messages on the broker."""

    def send_many(self, tokens: list[Token]) -> None: ...
