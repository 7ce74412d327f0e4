"""`dagrelay workers`: the live worker processes, what they serve and what they run now.

It reads the heartbeat records the worker processes keep in Redis (see
`executor.backends.redis.heartbeats`): a process that died drops out within a few
seconds, when its record expires.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from executor.backends.redis.backend import connect
from executor.backends.redis.heartbeats import WorkerBeat, live_workers
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


def register(app: typer.Typer) -> None:
    """Add `workers` to the `dagrelay` app."""
    app.command()(workers)


__all__ = ["register", "workers", "workers_table"]
