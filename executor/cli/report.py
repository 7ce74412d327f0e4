"""`dagrelay report`: a run's timeline picture, as one self-contained HTML page (or SVG).

    dagrelay report RUN_ID -o run.html [--redis URL]     # a run in Redis
    dagrelay report --result result.json -o run.html     # JSON from `run --json`
    dagrelay run FLOW ... --report run.html              # right after a run

The page needs nothing but a browser: no network, no scripts (see `executor.views.timeline.chart`).
An output path ending in `.svg` gets the chart alone.

Exit codes: 0 the picture was written (whatever the run's status); 2 usage errors: no run
or result given (or both), a missing or malformed result file, an unknown run, a Redis
that cannot be reached, an output path that cannot be written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from executor.backends.redis.backend import connect
from executor.backends.redis.store import RedisStore
from executor.cli.common import (
    DEFAULT_REDIS_URL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    RedisOpt,
    check_run_id,
    fail,
    guard,
    load_result,
    make_executor,
    one_line,
    redis_errors,
    redis_url,
)
from executor.errors import DagrelayError, RunNotFoundError
from executor.model.flow import Flow
from executor.model.tools import ToolRegistry
from executor.result import ExecutionResult
from executor.run.records import TERMINAL_RUN
from executor.views.timeline.chart import render_html, render_svg


def write_report(result: ExecutionResult, path: str) -> str:
    """Write the run's page (or its SVG chart, for a `.svg` path; `-` is stdout).

    Returns:
        what was written: `"html"` or `"svg"`.
    """
    kind = "svg" if path.lower().endswith(".svg") else "html"
    text = render_svg(result) if kind == "svg" else render_html(result)
    if path == "-":
        typer.echo(text, nl=False)
        return kind
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(one_line(f"{path}: cannot write: {exc.strerror or exc}"), EXIT_USAGE)
    return kind


def report(
    run_id: Annotated[
        str | None,
        typer.Argument(
            help="A run id in Redis (from `dagrelay submit` or `runs`).",
            metavar="RUN",
            show_default=False,
        ),
    ] = None,
    result_file: Annotated[
        str | None,
        typer.Option(
            "--result",
            help="Draw a result saved as JSON (`dagrelay run --json > r.json`) instead.",
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Where to write: a .html page, or .svg for the chart alone; '-' for stdout. "
            "Default: RUN_ID.html.",
        ),
    ] = None,
    redis: RedisOpt = DEFAULT_REDIS_URL,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait", min=0, metavar="SECONDS", help="Wait up to SECONDS for the run to finish."
        ),
    ] = None,
) -> None:
    """Write a run's timeline: a Gantt chart of every attempt by worker, queue waits,
    retries, the critical path, and every error with its traceback.

    Exit code 0 once written (whatever the run's status), 2 on usage errors.
    """
    with guard():
        if (run_id is None) == (result_file is None):
            fail("give a RUN id or --result FILE (one of them)", EXIT_USAGE)
        if result_file is not None:
            result = load_result(result_file)
        else:
            assert run_id is not None
            result = fetch_result(check_run_id(run_id), redis_url(redis), wait)
        path = output or f"{result.run_id}.html"
        kind = write_report(result, path)
        if path != "-":
            note = "" if result.status in TERMINAL_RUN else f" (the run is still {result.status})"
            typer.echo(
                f"wrote {path} ({kind}, run {result.run_id} {result.status}){note}", err=True
            )


def fetch_flow(run_id: str, url: str) -> Flow:
    """The flow a run in Redis was started with (stored with the run)."""
    try:
        client = connect(url)
    except DagrelayError as exc:
        fail(one_line(str(exc)), EXIT_USAGE)
    with redis_errors(url):
        try:
            text = RedisStore(client).run_meta(run_id, "flow").get("flow")
        except RunNotFoundError as exc:
            fail(one_line(str(exc)), EXIT_USAGE)
        finally:
            client.close()
    if not text:
        fail(f"run {run_id}: its flow is not stored (expired?)", EXIT_USAGE)
    return Flow.model_validate_json(text)


def fetch_result(run_id: str, url: str, wait: float | None) -> ExecutionResult:
    """A run's result from Redis, after waiting up to `wait` seconds for it to finish."""
    with make_executor(ToolRegistry(), url) as executor, redis_errors(url):
        handle = executor.get_run(run_id)
        if not wait or handle.done():
            return handle.result()
        try:
            return handle.wait(wait)
        except TimeoutError:
            return handle.result()
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None


def register(app: typer.Typer) -> None:
    """Add `report` to the `dagrelay` app."""
    app.command()(report)


__all__ = ["fetch_result", "load_result", "register", "report", "write_report"]
