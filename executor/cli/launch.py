"""Starting workers: `dagrelay worker` is `dramatiq workers` with dagrelay's environment.

The executor package never imports `workers`; it checks the tools module imports here
(so a broken module fails fast with its import error) and hands over to
`workers.supervisor` (by name): Dramatiq's worker processes, threads and graceful
shutdown, under a supervisor that checks Redis first and replaces a process that dies.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from executor.backends.redis.messages import lanes_of
from executor.cli.banner import worker_banner
from executor.model.tools import ToolRegistry, load_tools

DEFAULT_URL = "redis://localhost:6379/0"


def worker_argv(processes: int, threads: int, queues: Sequence[str]) -> list[str]:
    """The Dramatiq command line for a dagrelay worker."""
    argv = [
        sys.executable,
        "-m",
        "workers.supervisor",  # takes `dramatiq workers`' arguments
        "workers",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--worker-shutdown-timeout",
        "30000",
    ]
    if queues:
        # Each queue is two Dramatiq queues: its sync and async lanes.
        argv += ["--queues", *lanes_of(list(queues))]
    return argv


def worker_env(
    tools: str, redis_url: str | None, queues: Sequence[str], namespace: str | None = None
) -> dict[str, str]:
    """The environment `workers` reads its settings from."""
    env = dict(os.environ)
    env["DAGRELAY_TOOLS"] = tools
    env["DAGRELAY_SUPERVISED"] = "1"  # the supervisor builds no broker; its processes do
    if redis_url:
        env["DAGRELAY_REDIS_URL"] = redis_url
    if queues:
        env["DAGRELAY_QUEUES"] = " ".join(queues)
    if namespace:
        env["DAGRELAY_NAMESPACE"] = namespace
    # Worker processes must import the tools module the way this process does.
    path = [os.getcwd(), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    return env


def check_tools(tools: str) -> ToolRegistry:
    """Import the tools module here first: its import error is the user's answer.

    Raises:
        DagrelayError: the module cannot be imported.
    """
    return load_tools(tools)


def run_worker(
    tools: str,
    redis_url: str | None,
    processes: int,
    threads: int,
    queues: Sequence[str],
    namespace: str | None = None,
    async_steps: int = 0,
) -> int:
    """Run worker processes in the foreground until they stop; returns the exit code.

    Args:
        async_steps: async tool calls a process may run at once (0: they share the
            `threads` slots).
    """
    registry = check_tools(tools)
    url = redis_url or os.environ.get("DAGRELAY_REDIS_URL") or DEFAULT_URL
    ns = namespace or os.environ.get("DAGRELAY_NAMESPACE") or "dagrelay"
    argv = worker_argv(processes, threads, queues)
    env = worker_env(tools, redis_url, queues, namespace)
    # Printed by the supervisor once Redis answered (nothing says "starting" before).
    env["DAGRELAY_BANNER"] = worker_banner(
        registry, url, ns, queues, processes, threads, async_steps
    )
    env["DAGRELAY_THREADS"] = str(threads)  # also read again from Dramatiq's worker
    if async_steps:
        env["DAGRELAY_ASYNC_STEPS"] = str(async_steps)
    if hasattr(os, "execvpe"):
        os.execvpe(argv[0], argv, env)  # signals go straight to Dramatiq's supervisor
    return subprocess.call(argv, env=env)  # pragma: no cover - platforms without exec
