"""Step messages: what the coordinator puts on the broker and a worker's actor receives.

A message names a run and its steps, never data: a worker reads what it needs from
Redis with its claim. A fan-out's ready steps go several to a message (a bundle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

DEFAULT_QUEUE = "dagrelay"
ACTOR_NAME = "run_step"


# Bundles of at most this many steps, and at least this many bundles per fan-out.
BUNDLE_MAX = 16
BUNDLES_MIN = 32


def bundle_size(ready: int) -> int:
    """Steps per message when `ready` steps are sent at once (1: no bundles)."""
    return max(1, min(BUNDLE_MAX, ready // BUNDLES_MIN))


@dataclass(frozen=True, slots=True)
class StepMessage:
    """What a step message says: ids and routing, never data."""

    run_id: str
    step_id: str
    attempt: int
    queue: str
    delay_ms: int | None = None
    time_limit_ms: int | None = None
    more: tuple[str, ...] = ()  # a bundle: further steps of the run, run by one worker


class Sender(Protocol):
    """Puts step messages on the broker."""

    def send_many(self, messages: list[StepMessage]) -> None: ...
