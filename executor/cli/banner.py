"""What `dagrelay worker` says as it starts: the banner of the pool it is about to run."""

from __future__ import annotations

from collections.abc import Sequence

from executor.backends.redis.backend import redact
from executor.model.tools import ToolRegistry
from executor.version import __version__

DEFAULT_QUEUE = "dagrelay"


def worker_banner(
    registry: ToolRegistry,
    redis_url: str,
    namespace: str,
    queues: Sequence[str],
    processes: int,
    threads: int,
    async_steps: int,
) -> str:
    """Version, Redis (no password), namespace, queues, tools and slots, one per line."""
    tools = registry.names()
    if async_steps:
        slots = f"{threads} threads (sync calls) and {async_steps} async slots"
    else:
        slots = f"{threads} threads (sync and async calls share them)"
    rows = [
        ("redis", redact(redis_url)),
        ("namespace", namespace),
        ("queues", ", ".join(queues or [DEFAULT_QUEUE])),
        ("tools", f"{', '.join(tools) or 'none'} ({len(tools)})"),
        ("capacity", f"{processes} process{'es' if processes != 1 else ''} x {slots}"),
    ]
    return "\n".join([f"dagrelay {__version__} worker"] + [f"  {k:<10} {v}" for k, v in rows])


__all__ = ["worker_banner"]
