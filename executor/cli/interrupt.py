"""Ctrl-C during `dagrelay run`: cancel, wait out a grace, a second one exits at once.

The first cancels the run and says what it waits for; the second exits with 130 at
once, without a traceback and without joining tool threads.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

import typer

from executor.client import FlowExecutor
from executor.handle import RunHandle
from executor.result import ExecutionResult
from executor.run.records import TERMINAL_RUN

EXIT_INTERRUPTED = 130


def exit_now(message: str) -> None:
    """Say why, then leave without unwinding: no thread is joined, no traceback."""
    typer.echo(message, err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def second_interrupt_exits(run_id: str) -> None:
    """From now on Ctrl-C (or SIGTERM) leaves at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        exit_now(f"interrupted again: exiting now (run {run_id} was asked to cancel)")

    signal.signal(signal.SIGINT, handler)


def cancel_on_interrupt(
    handle: RunHandle, executor: FlowExecutor, grace: float, distributed: bool
) -> tuple[ExecutionResult, Callable[[], None]]:
    """Cancel the run, say what it waits for, wait up to `grace` seconds for it to stop.

    Returns the run's result as it is then, and what to call once it is shown: it waits
    out the rest of the grace for sync tool calls still running in this process's threads
    (they cannot be interrupted), then exits with 130 without joining them.
    """
    second_interrupt_exits(handle.run_id)
    deadline = time.monotonic() + grace
    before = handle.result()
    running = [
        f"{r.step_id}: tool {r.tool}" for r in before.steps.values() if r.status == "running"
    ]
    handle.cancel()
    where = "on the workers" if distributed else "in this process"
    what = f"{len(running)} running step{'s' if len(running) != 1 else ''} {where}"
    if running:
        what += " (" + ", ".join(running[:5]) + (" …" if len(running) > 5 else "") + ")"
    typer.echo(
        f"interrupted: cancelling run {handle.run_id}; waiting up to {grace:g}s for {what} "
        "to stop (--grace); Ctrl-C again exits now",
        err=True,
    )
    try:
        result = handle.wait(max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        result = handle.result()

    def finish() -> None:
        backend = getattr(executor, "_backend", None)  # the embedded backend's threads
        busy: Callable[[], int] = getattr(backend, "sync_calls_running", lambda: 0)
        if not distributed and busy():
            typer.echo(
                f"waiting up to {max(0.0, deadline - time.monotonic()):.0f}s more for "
                f"{busy()} sync tool call{'s' if busy() != 1 else ''} still running in "
                "this process's threads (a thread cannot be interrupted)",
                err=True,
            )
            while busy() and time.monotonic() < deadline:
                time.sleep(0.05)
            if busy():
                typer.echo(f"grace of {grace:g}s over: leaving {busy()} running", err=True)
        state = result.status if result.status in TERMINAL_RUN else "still stopping"
        exit_now(f"error: interrupted: run {result.run_id} {state}")

    return result, finish


__all__ = ["cancel_on_interrupt", "exit_now", "second_interrupt_exits"]
