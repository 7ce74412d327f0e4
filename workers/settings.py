"""Worker settings, from the environment (what `dagrelay worker` and compose set)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from executor.model.tools import DEFAULT_MAX_OUTPUT_BYTES

DEFAULT_URL = "redis://localhost:6379/0"


@dataclass(frozen=True)
class Settings:
    """Where Redis is, which tools to load, which queues to serve, lease timing.

    A running unit holds a lease of `lease_seconds`, renewed every third of it; a
    sweeper looks for expired leases every `sweep_seconds`. So a killed worker's unit
    runs again after at most about `lease_seconds + sweep_seconds`. A process runs at
    most `threads` sync tool calls (Dramatiq's `--threads`, read again when its worker
    boots) and `async_steps` async ones at once (0: async calls share the sync slots).
    """

    redis_url: str = DEFAULT_URL
    namespace: str = "dagrelay"
    tools: str | None = None
    queues: tuple[str, ...] = ("dagrelay",)
    lease_seconds: float = 6.0
    sweep_seconds: float = 1.0
    result_ttl: int = 7 * 24 * 3600
    threads: int = 8
    async_steps: int = 0
    # A worker process not heard from for this long is presumed dead: the messages it
    # had fetched but not started go back to their queue (Dramatiq's maintenance).
    heartbeat_seconds: float = 10.0
    # How often a worker process writes its record for `dagrelay workers` (it expires
    # after three beats missed).
    beat_seconds: float = 2.0
    # How long a queued unit whose queue and tool no live worker serves waits before it
    # fails with that message (cut short to come before the run's timeout).
    no_worker_seconds: float = 10.0
    # How long Redis may be unreachable before a worker's Redis call gives up (it
    # reconnects with backoff meanwhile): a restart costs a pause, not the step.
    redis_retry_seconds: float = 60.0
    # The largest step output (its JSON) a worker stores; a larger one fails the step.
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    # Sync calls given up at their timeout whose threads still run: past this many (0:
    # as many as `threads`) the process restarts itself gracefully to be rid of them.
    max_abandoned: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        queues = tuple(q for q in e.get("DAGRELAY_QUEUES", "").replace(",", " ").split() if q)
        return cls(
            redis_url=e.get("DAGRELAY_REDIS_URL", DEFAULT_URL),
            namespace=e.get("DAGRELAY_NAMESPACE", "dagrelay"),
            tools=e.get("DAGRELAY_TOOLS") or None,
            queues=queues or ("dagrelay",),
            lease_seconds=float(e.get("DAGRELAY_LEASE_SECONDS", "6")),
            sweep_seconds=float(e.get("DAGRELAY_SWEEP_SECONDS", "1")),
            result_ttl=int(e.get("DAGRELAY_RESULT_TTL", str(7 * 24 * 3600))),
            threads=int(e.get("DAGRELAY_THREADS", "8")),
            async_steps=int(e.get("DAGRELAY_ASYNC_STEPS", "0")),
            heartbeat_seconds=float(e.get("DAGRELAY_HEARTBEAT_SECONDS", "10")),
            beat_seconds=float(e.get("DAGRELAY_BEAT_SECONDS", "2")),
            no_worker_seconds=float(e.get("DAGRELAY_NO_WORKER_SECONDS", "10")),
            redis_retry_seconds=float(e.get("DAGRELAY_REDIS_RETRY_SECONDS", "60")),
            max_output_bytes=int(e.get("DAGRELAY_MAX_OUTPUT_BYTES", str(DEFAULT_MAX_OUTPUT_BYTES))),
            max_abandoned=int(e.get("DAGRELAY_MAX_ABANDONED", "0")),
        )
