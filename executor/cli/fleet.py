"""`dagrelay workers`: the live worker processes, what they serve and what they run now.

It reads the heartbeat records the worker processes keep in Redis (see
`executor.backends.redis.heartbeats`): a process that died drops out within a few
seconds, when its record expires. `run` and `status` read them too, to say when no live
worker serves a waiting step's queue with its tool (`watch_unserved`, `unserved_lines`).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from executor.backends.redis.backend import RedisBackend, connect
from executor.backends.redis.heartbeats import WorkerBeat, live_workers
from executor.backends.redis.unserved import NoWorkerWatch, waiting_unserved
from executor.cli.common import (
    DEFAULT_REDIS_URL,
    EXIT_USAGE,
    RedisOpt,
    fail,
    guard,
    one_line,
    redis_errors,
    redis_url,
    stdout_console,
)
from executor.errors import DagrelayError
from executor.model.tools import ToolRegistry
from executor.views.format import format_age

NamespaceOpt = Annotated[
    str,
    typer.Option(
        "--namespace",
        envvar="DAGRELAY_NAMESPACE",
        show_envvar=True,
        help="The workers' key namespace in Redis.",
    ),
]


def workers(
    redis: RedisOpt = DEFAULT_REDIS_URL,
    namespace: NamespaceOpt = "dagrelay",
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the workers as a JSON list.")
    ] = False,
) -> None:
    """The live worker processes: queues, tools, slots in use and the steps they run.

    Exit code 0 (also when none is live: then it says so on stderr), 2 if Redis cannot
    be reached.
    """
    with guard():
        url = redis_url(redis)
        try:
            client = connect(url)
        except DagrelayError as exc:
            fail(one_line(str(exc)), EXIT_USAGE)
        with redis_errors(url):
            found = live_workers(client, namespace)
        client.close()
        if json_output:
            typer.echo(json.dumps([w.model_dump(mode="json") for w in found], indent=2))
            return
        if not found:
            typer.echo(f"no live workers (namespace {namespace!r})", err=True)
            return
        stdout_console().print(workers_table(found))


def workers_table(found: list[WorkerBeat], now: datetime | None = None) -> Table:
    """One row per worker process."""
    now = now or datetime.now(UTC)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("worker", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("queues", overflow="fold")
    table.add_column("tools", overflow="fold")
    table.add_column("slots", justify="right", no_wrap=True)
    table.add_column("running", overflow="fold")
    table.add_column("up", justify="right", no_wrap=True)
    for w in found:
        slots = f"{w.busy}/{w.threads}" + (f"+{w.async_slots} async" if w.async_slots else "")
        running = ", ".join(f"{u.run_id[:8]} {u.step} #{u.attempt}" for u in w.running)
        started = datetime.fromisoformat(w.started_at)
        table.add_row(
            w.id,
            w.version,
            Text(", ".join(w.queues)),
            Text(", ".join(w.tools) or "-"),
            slots,
            Text(running or "-"),
            format_age((now - started).total_seconds()),
        )
    return table


# How often a watching `run` looks for steps no live worker serves.
WATCH_PERIOD = 1.0


@contextlib.contextmanager
def watch_unserved(url: str, run_id: str, fail_after: float | None) -> Iterator[None]:
    """While the block runs, say on stderr (once per queue and tool) when no live worker
    serves a waiting step, and fail such steps after `fail_after` seconds (None: never)."""
    stop = threading.Event()
    try:
        backend = RedisBackend(url, ToolRegistry())
    except DagrelayError:  # the run itself reports Redis trouble
        yield
        return
    watch = NoWorkerWatch(backend, run_id, fail_after)

    def loop() -> None:
        while True:
            try:
                for line in watch.poll():
                    typer.echo(f"warning: {line}", err=True)
            except Exception:  # a hint only: never the run's failure
                pass
            if stop.wait(WATCH_PERIOD):
                return

    thread = threading.Thread(target=loop, name="dagrelay-no-worker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        backend.close()


def unserved_lines(url: str, run_id: str) -> list[str]:
    """The waiting steps of a run that no live worker serves, one line per queue and tool."""
    try:
        backend = RedisBackend(url, ToolRegistry())
    except DagrelayError:
        return []
    try:
        return waiting_unserved(backend, run_id)
    finally:
        backend.close()


def register(app: typer.Typer) -> None:
    """Add `workers` to the `dagrelay` app."""
    app.command()(workers)


__all__ = ["register", "unserved_lines", "watch_unserved", "workers", "workers_table"]
