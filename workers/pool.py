"""A worker process's capacity: its slots for sync and async tool calls, and who holds them.

A process runs at most `--threads` sync tool calls and `--async-steps` async ones at
once (with `--async-steps 0`, async calls share the sync slots, one per thread, as
Dramatiq's own async actors do). Every unit of work takes a slot before it is claimed,
whatever brought it: a token message (its consumer holds the slot from the moment it
fetches the message, so a process never fetches more than it can start), a dependent
kept in place, a map item. A sync call gives its slot back when its thread returns, or
when it is abandoned at its timeout (its thread then runs on outside the pool, see
`ToolThreads`); an async one when its unit is settled.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from executor.backends.redis.messages import is_async_lane


@dataclass(slots=True)
class Slots:
    """One kind of slot: how many, how many are taken, how many fetched messages hold."""

    capacity: int
    used: int = 0
    held: int = 0

    @property
    def free(self) -> int:
        return self.capacity - self.used - self.held


class Pool:
    """The slots of one worker process; thread-safe (consumers, Dramatiq threads and the
    pipeline's loop take and give them)."""

    def __init__(self, threads: int, async_steps: int = 0) -> None:
        self.sync = Slots(threads)
        self.async_ = Slots(async_steps) if async_steps > 0 else self.sync
        # Lanes whose queue has messages waiting while this process has no slot free
        # (seen by their consumers): then a finishing unit's dependents go to the queue
        # too, behind what waits, instead of taking its slot here.
        self.backlog: dict[str, bool] = {}
        self._lock = threading.Condition()

    def resize(self, threads: int) -> None:
        """Set the sync slots (to Dramatiq's `--threads`, known once its worker boots)."""
        with self._lock:
            self.sync.capacity = threads
            self._lock.notify_all()

    def slots(self, lane: str) -> Slots:
        return self.async_ if is_async_lane(lane) else self.sync

    def kind(self, lane: str) -> str:
        """`sync` or `async`: the kind of slot a lane's units take (`sync` for both when
        async calls share the threads' slots)."""
        return "async" if self.slots(lane) is not self.sync else "sync"

    def lane_of_kind(self, kind: str) -> str:
        """A lane whose units take slots of `kind` (to give such slots back)."""
        return "_.async" if kind == "async" else "_"

    def free(self, lane: str) -> int:
        with self._lock:
            return self.slots(lane).free

    def running(self) -> int:
        """Slots taken by units in this process (both kinds)."""
        with self._lock:
            if self.async_ is self.sync:
                return self.sync.used
            return self.sync.used + self.async_.used

    # Consumers: a slot for each fetched message, until its actor runs -------------------
    def hold(self, lane: str, want: int) -> int:
        """Hold a free slot for a message about to be fetched (1, or 0 if none is free or
        a fetched message has not been taken yet).

        One message at a time: a token may stand for several units, and its take claims
        as many as there are free slots then; fetching a message per free slot first
        would leave each of them one slot, one unit, a message's whole cost per unit.
        """
        with self._lock:
            s = self.slots(lane)
            if want <= 0 or s.free <= 0 or s.held > 0:
                return 0
            s.held = 1
            return 1

    def unhold(self, lane: str, n: int = 1) -> None:
        """Give back holds (fewer messages came than were held for, or one was skipped)."""
        if n > 0:
            with self._lock:
                s = self.slots(lane)
                s.held = max(0, s.held - n)
                self._lock.notify_all()

    def wait_free(self, lane: str, timeout: float) -> bool:
        """Wait up to `timeout` seconds until a message may be fetched for the lane (a
        slot of its kind is free, and no fetched message waits to be taken)."""
        s = self.slots(lane)
        with self._lock:
            return self._lock.wait_for(lambda: s.free > 0 and s.held == 0, timeout)

    def take_hold(self, lane: str) -> bool:
        """A fetched message reaches a worker thread: its held slot becomes taken (False
        if none was held: the message did not come through a consumer of this pool)."""
        with self._lock:
            s = self.slots(lane)
            if s.held <= 0:
                return False
            s.held -= 1
            s.used += 1
            self._lock.notify_all()  # a consumer may fetch the next message
            return True

    # Units: a slot each while they run ------------------------------------------------
    def reserve(self, lane: str, n: int = 1) -> int:
        """Take up to `n` free slots (not those held for fetched messages); how many."""
        with self._lock:
            s = self.slots(lane)
            got = max(0, min(n, s.free))
            s.used += got
            return got

    def release(self, lane: str, n: int = 1) -> None:
        if n > 0:
            with self._lock:
                s = self.slots(lane)
                s.used = max(0, s.used - n)
                self._lock.notify_all()
