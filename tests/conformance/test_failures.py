"""Failure handling: fail-fast vs continue, retries, timeouts, cancel, run timeout."""

from __future__ import annotations

import time

import pytest

from executor import Flow, FlowFailedError, RetryPolicy, Step

from .support import gap, marker_says, statuses, wait_until
from .tools import read_lines

pytestmark = pytest.mark.timeout(60)
LONG = 5.0  # a sleep no test may wait for


# fail_fast / continue ----------------------------------------------------------------
def test_fail_fast_cancels_running_and_pending_steps(backend, files):
    marker = files("sleeper")
    flow = Flow(
        name="ff",
        steps=[
            Step(id="bad", tool="fail", inputs={"seconds": 0.05, "message": "first"}),
            Step(id="sleeper", tool="sleep", inputs={"seconds": LONG, "marker": marker}),
            Step(id="after_sleeper", tool="echo", inputs={"value": "$steps.sleeper"}),
            Step(id="after_bad", tool="echo", inputs={"value": "$steps.bad"}),
        ],
        on_failure="fail_fast",
    )
    t0 = time.monotonic()
    r = backend.run(flow)
    elapsed = time.monotonic() - t0
    assert r.status == "failed"
    assert elapsed < 0.2 * LONG
    assert r.wall_time < 0.2 * LONG
    assert statuses(r) == {
        "bad": "failed",
        "sleeper": "cancelled",
        "after_sleeper": "cancelled",
        "after_bad": "cancelled",
    }
    assert r.steps["bad"].error.type == "ValueError"
    assert r.steps["bad"].error.message == "first"
    assert "ValueError" in (r.steps["bad"].error.traceback or "")
    # The running step was really cancelled, promptly after the failure.
    assert marker_says(marker, "cancelled")
    assert "finished" not in read_lines(marker)
    sleeper = r.steps["sleeper"]
    assert sleeper.finished_at is not None
    assert gap(r.steps["bad"].finished_at, sleeper.finished_at) < 0.1 * LONG
    # Pending steps never started.
    assert r.steps["after_sleeper"].started_at is None
    assert r.steps["after_sleeper"].attempts == []
    with pytest.raises(FlowFailedError) as info:
        r.raise_for_status()
    assert info.value.result is r
    assert "bad" in str(info.value)


def test_fail_fast_cancels_steps_waiting_for_a_concurrency_slot(backend):
    # x0 holds the only `exclusive` slot; x1, x2 are queued behind it when bad fails.
    flow = Flow(
        name="ff-queued",
        steps=[
            *[
                Step(id=f"x{i}", tool="exclusive", inputs={"seconds": 1.0, "value": i})
                for i in range(3)
            ],
            Step(id="bad", tool="fail", inputs={"seconds": 0.1}),
        ],
    )
    r = backend.run(flow)
    assert r.status == "failed"
    assert r.wall_time < 0.9
    assert r.steps["bad"].status == "failed"
    assert {r.steps[f"x{i}"].status for i in range(3)} == {"cancelled"}
    # Whatever was still queued never ran its tool.
    ran = [i for i in range(3) if r.steps[f"x{i}"].attempts]
    assert len(ran) <= 1


def test_continue_lets_independent_branches_finish(backend):
    flow = Flow(
        name="cont",
        steps=[
            Step(id="bad", tool="fail", inputs={"seconds": 0.02}),
            Step(id="after_bad", tool="echo", inputs={"value": "$steps.bad"}),
            Step(id="slow", tool="sleep", inputs={"seconds": 0.2, "value": "s"}),
            Step(id="after_slow", tool="echo", inputs={"value": "$steps.slow"}),
        ],
        on_failure="continue",
    )
    r = backend.run(flow)
    assert r.status == "failed"
    assert statuses(r) == {
        "bad": "failed",
        "after_bad": "upstream_failed",
        "slow": "succeeded",
        "after_slow": "succeeded",
    }
    assert r.steps["after_slow"].output == "s"
    assert r.wall_time >= 0.2


def test_bad_inputs_and_bad_outputs_fail_the_step(backend):
    flow = Flow(
        name="bad-io",
        steps=[
            Step(id="in", tool="add", inputs={"a": "not a number", "b": 1}),
            Step(id="out", tool="bad_output"),
        ],
        on_failure="continue",
    )
    r = backend.run(flow)
    assert statuses(r) == {"in": "failed", "out": "failed"}
    assert "StepInputError" in r.steps["in"].error.type
    assert "ToolOutputError" in r.steps["out"].error.type


# Retries -----------------------------------------------------------------------------
def test_retries_until_success_with_attempt_records_and_backoff(backend, files):
    counter = files("counter")
    backoff = 0.05
    flow = Flow(
        name="retry",
        steps=[
            Step(
                id="f",
                tool="flaky",
                inputs={"counter": counter, "fail_times": 2, "value": "ok"},
                retry=RetryPolicy(max_attempts=4, backoff=backoff, multiplier=2.0),
            )
        ],
        output="$steps.f",
    )
    r = backend.run(flow)
    assert r.status == "succeeded"
    assert r.output == "ok"
    rec = r.steps["f"]
    assert [a.number for a in rec.attempts] == [1, 2, 3]
    assert [a.error is not None for a in rec.attempts] == [True, True, False]
    assert "TransientError" in rec.attempts[0].error.type
    assert rec.attempts[0].error.message == "attempt 1 fails"
    assert rec.attempts[1].error.message == "attempt 2 fails"
    for a in rec.attempts:
        assert a.finished_at >= a.started_at
        assert a.duration is not None and a.duration >= 0
    # Backoff: 0.05 after attempt 1, 0.1 after attempt 2.
    assert gap(rec.attempts[0].finished_at, rec.attempts[1].started_at) >= backoff * 0.9
    assert gap(rec.attempts[1].finished_at, rec.attempts[2].started_at) >= 2 * backoff * 0.9
    assert rec.started_at == rec.attempts[0].started_at
    assert rec.finished_at == rec.attempts[-1].finished_at
    assert rec.duration >= 3 * backoff * 0.9


def test_retries_exhausted_fail_the_step(backend, files):
    counter = files("counter")
    flow = Flow(
        name="retry-out",
        steps=[
            Step(
                id="f",
                tool="flaky",
                inputs={"counter": counter, "fail_times": 10},
                retry=RetryPolicy(max_attempts=3),
            ),
            Step(id="after", tool="echo", inputs={"value": "$steps.f"}),
        ],
        on_failure="continue",
    )
    r = backend.run(flow)
    assert r.status == "failed"
    rec = r.steps["f"]
    assert rec.status == "failed"
    assert [a.number for a in rec.attempts] == [1, 2, 3]
    assert all(a.error is not None for a in rec.attempts)
    assert rec.error.message == "attempt 3 fails"
    assert r.steps["after"].status == "upstream_failed"
    assert read_lines(counter) == ["3"]


@pytest.mark.parametrize(
    ("error", "attempts", "status"),
    [("TransientError", 2, "succeeded"), ("PermanentError", 1, "failed")],
)
def test_retry_on_filters_errors(backend, files, error, attempts, status):
    flow = Flow(
        name="retry-on",
        steps=[
            Step(
                id="f",
                tool="flaky",
                inputs={"counter": files(), "fail_times": 1, "error": error, "value": 1},
                retry=RetryPolicy(max_attempts=5, retry_on=("TransientError",)),
            )
        ],
    )
    r = backend.run(flow)
    assert r.steps["f"].status == status
    assert len(r.steps["f"].attempts) == attempts


def test_retry_on_accepts_qualified_names(backend, files):
    flow = Flow(
        name="retry-on-q",
        steps=[
            Step(
                id="f",
                tool="flaky",
                inputs={"counter": files(), "fail_times": 1, "value": 1},
                retry=RetryPolicy(max_attempts=3, retry_on=("builtins.Exception",)),
            )
        ],
    )
    r = backend.run(flow)
    assert r.steps["f"].status == "succeeded"
    assert len(r.steps["f"].attempts) == 2


def test_tool_default_retry_and_step_override(backend, files):
    flow = Flow(
        name="tool-retry",
        steps=[
            Step(
                id="tool_policy",
                tool="flaky_with_default_retry",
                inputs={"counter": files(), "fail_times": 2},
            ),
            Step(
                id="step_policy",
                tool="flaky_with_default_retry",
                inputs={"counter": files(), "fail_times": 2},
                retry=RetryPolicy(max_attempts=1),
            ),
        ],
        on_failure="continue",
    )
    r = backend.run(flow)
    assert r.steps["tool_policy"].status == "succeeded"
    assert r.steps["tool_policy"].output == 3
    assert len(r.steps["tool_policy"].attempts) == 3
    assert r.steps["step_policy"].status == "failed"
    assert len(r.steps["step_policy"].attempts) == 1


def test_run_stopped_during_a_retry_closes_the_open_attempt(backend, files):
    flow = Flow(
        name="stop-mid-retry",
        timeout=0.3,
        steps=[
            Step(
                id="f",
                tool="flaky",
                # Attempt 1 fails at once; attempt 2 is still running when the run ends.
                inputs={
                    "counter": files("counter"),
                    "fail_times": 1,
                    "slow_attempt": 2,
                    "slow_seconds": LONG,
                },
                retry=RetryPolicy(max_attempts=3),
            )
        ],
    )
    r = backend.run(flow)
    assert r.status == "timed_out"
    rec = r.steps["f"]
    assert rec.status == "cancelled"
    assert [a.number for a in rec.attempts] == [1, 2]
    first, second = rec.attempts
    assert first.error is not None and "TransientError" in first.error.type
    assert second.finished_at is not None and second.duration is not None
    assert second.error is not None  # says it was cancelled
    assert rec.finished_at >= second.started_at
    assert rec.duration >= 0.2


# Timeouts ----------------------------------------------------------------------------
def test_step_timeout_cancels_an_async_tool(backend, files):
    marker = files("marker")
    flow = Flow(
        name="timeout",
        steps=[
            Step(id="slow", tool="sleep", inputs={"seconds": LONG, "marker": marker}, timeout=0.1)
        ],
    )
    r = backend.run(flow)
    assert r.status == "failed"
    rec = r.steps["slow"]
    assert rec.status == "failed"
    assert rec.error.type == "TimeoutError"
    assert len(rec.attempts) == 1
    assert rec.attempts[0].error.type == "TimeoutError"
    assert 0.09 <= rec.duration < 0.1 * LONG
    assert r.wall_time < 0.2 * LONG
    assert marker_says(marker, "cancelled")
    assert "finished" not in read_lines(marker)


def test_step_timeout_is_per_attempt_and_retryable(backend, files):
    counter = files("counter")
    flow = Flow(
        name="timeout-retry",
        steps=[
            Step(
                id="f",
                tool="flaky",
                # The first attempt hangs past the timeout; the second returns at once.
                inputs={"counter": counter, "fail_times": 1, "hang": LONG, "value": "second"},
                timeout=0.1,
                retry=RetryPolicy(max_attempts=2, retry_on=("TimeoutError",)),
            )
        ],
        output="$steps.f",
    )
    r = backend.run(flow)
    assert r.status == "succeeded"
    assert r.output == "second"
    rec = r.steps["f"]
    assert [a.number for a in rec.attempts] == [1, 2]
    assert rec.attempts[0].error.type == "TimeoutError"
    assert rec.attempts[1].error is None
    assert r.wall_time < 0.2 * LONG


def test_tool_default_timeout_and_step_override(backend):
    flow = Flow(
        name="tool-timeout",
        steps=[
            Step(id="tool_default", tool="slow_with_default_timeout", inputs={"seconds": LONG}),
            Step(
                id="step_longer",
                tool="slow_with_default_timeout",
                inputs={"seconds": 0.3},
                timeout=2.0,
            ),
        ],
        on_failure="continue",
    )
    r = backend.run(flow)
    assert r.steps["tool_default"].status == "failed"
    assert r.steps["tool_default"].error.type == "TimeoutError"
    assert r.steps["step_longer"].status == "succeeded"
    assert r.wall_time < 0.2 * LONG


def test_run_timeout_stops_the_run(backend, files):
    marker = files("marker")
    flow = Flow(
        name="run-timeout",
        timeout=0.2,
        steps=[
            Step(id="quick", tool="echo", inputs={"value": 1}),
            Step(id="slow", tool="sleep", inputs={"seconds": LONG, "marker": marker}),
            Step(id="after", tool="echo", inputs={"value": "$steps.slow"}),
        ],
    )
    r = backend.run(flow)
    assert r.status == "timed_out"
    assert not r.succeeded
    assert statuses(r) == {"quick": "succeeded", "slow": "cancelled", "after": "cancelled"}
    assert 0.2 <= r.wall_time < 0.2 * LONG
    assert marker_says(marker, "cancelled")
    assert "timeout" in (r.error or "")
    with pytest.raises(FlowFailedError):
        r.raise_for_status()


# Cancel ------------------------------------------------------------------------------
def test_cancel_a_running_run(backend, files):
    marker = files("marker")
    flow = Flow(
        name="cancel",
        steps=[
            Step(id="slow", tool="sleep", inputs={"seconds": LONG, "marker": marker}),
            Step(id="after", tool="echo", inputs={"value": "$steps.slow"}),
        ],
    )
    handle = backend.submit(flow)
    for event in handle.events(timeout=LONG):
        if event.step_id == "slow" and event.status == "running":
            break
    assert marker_says(marker, "started")
    assert handle.status() == "running"
    assert not handle.done()
    t0 = time.monotonic()
    handle.cancel()
    r = handle.wait(timeout=LONG)
    assert time.monotonic() - t0 < 0.2 * LONG
    assert r.status == "cancelled"
    assert handle.status() == "cancelled"
    assert handle.done()
    assert statuses(r) == {"slow": "cancelled", "after": "cancelled"}
    assert marker_says(marker, "cancelled")
    assert r.error
    handle.cancel()  # cancelling a finished run is harmless
    assert handle.wait(timeout=1).status == "cancelled"


def test_cancel_right_after_submit(backend):
    flow = Flow(
        name="cancel-early", steps=[Step(id="slow", tool="sleep", inputs={"seconds": LONG})]
    )
    handle = backend.submit(flow)
    handle.cancel()
    r = handle.wait(timeout=LONG)
    assert r.status == "cancelled"
    assert r.steps["slow"].status == "cancelled"


def test_wait_with_timeout_leaves_the_run_going(backend):
    flow = Flow(name="wait", steps=[Step(id="s", tool="sleep", inputs={"seconds": 0.3})])
    handle = backend.submit(flow)
    with pytest.raises(TimeoutError):
        handle.wait(timeout=0.01)
    assert wait_until(handle.done, timeout=LONG)
    assert handle.wait(timeout=1).status == "succeeded"


# What a stop records (issue 14's differences, the same on every backend) ---------------
def test_a_step_whose_attempt_fails_after_a_fail_fast_stop_is_cancelled(backend):
    """`slow` fails 0.3 s in, with retries left, after `bad` stopped the run: it is
    cancelled (the stop caught it running), not failed, and nothing retries it."""
    flow = Flow(
        name="late-failure",
        steps=[
            # `bad` fails once `slow` runs (0.1 s: both roots have started by then).
            Step(id="bad", tool="fail", inputs={"message": "first", "seconds": 0.1}),
            Step(
                id="slow",
                tool="fail",
                inputs={"seconds": 0.3, "message": "second"},
                retry=RetryPolicy(max_attempts=3),
            ),
        ],
    )
    r = backend.run(flow)
    assert r.status == "failed"
    assert statuses(r) == {"bad": "failed", "slow": "cancelled"}
    slow = r.steps["slow"]
    assert len(slow.attempts) == 1
    err = slow.attempts[0].error
    assert err is not None and err.type == "CancelledError" and "fail_fast" in err.message
    assert slow.error == err
    assert r.error == "step 'bad' failed: ValueError: first"


def test_the_run_error_names_the_step_that_failed_first_in_time(backend):
    flow = Flow(
        name="two-failures",
        on_failure="continue",
        steps=[
            Step(id="late", tool="fail", inputs={"seconds": 0.4, "message": "late"}),
            Step(id="early", tool="fail", inputs={"message": "early"}),
        ],
    )
    r = backend.run(flow)
    assert r.status == "failed"
    assert r.error == "step 'early' failed: ValueError: early (1 other step failed too)"


def test_a_step_that_succeeds_on_a_retry_has_no_error(backend, files):
    flow = Flow(
        name="retry-ok",
        steps=[
            Step(
                id="f",
                tool="flaky",
                inputs={"counter": files("n"), "fail_times": 1, "value": 1},
                retry=RetryPolicy(max_attempts=2),
            )
        ],
    )
    r = backend.run(flow)
    assert r.status == "succeeded"
    rec = r.steps["f"]
    assert rec.error is None
    assert [a.error is not None for a in rec.attempts] == [True, False]


def test_a_cancel_records_the_running_step_cancelled_with_the_reason(backend):
    flow = Flow(name="long", steps=[Step(id="s", tool="sleep", inputs={"seconds": LONG})])
    handle = backend.submit(flow)
    assert wait_until(lambda: handle.result().steps["s"].status == "running", 10)
    handle.cancel()
    r = handle.wait(timeout=10)
    assert r.status == "cancelled" and r.error == "run cancelled"
    rec = r.steps["s"]
    assert rec.status == "cancelled"
    assert rec.error is not None and rec.error.type == "CancelledError"
    assert rec.error.message == "the run was cancelled"
    assert rec.attempts[-1].error == rec.error


def test_a_fail_fast_stop_spares_a_cleanup_step(backend):
    """Under fail_fast an `all_done` step still runs once its dependencies are done:
    cleanup runs when a run fails."""
    flow = Flow(
        name="cleanup",
        steps=[
            Step(id="bad", tool="fail", inputs={"seconds": 0.05}),
            Step(id="slow", tool="sleep", inputs={"seconds": LONG}),
            Step(
                id="cleanup",
                tool="echo",
                inputs={"value": "clean"},
                depends_on=["bad", "slow"],
                trigger="all_done",
            ),
            Step(id="after", tool="echo", inputs={"value": "$steps.cleanup"}),
        ],
    )
    t0 = time.monotonic()
    r = backend.run(flow)
    assert time.monotonic() - t0 < 0.5 * LONG  # `slow` was cancelled, not waited for
    assert r.status == "failed"
    assert statuses(r) == {
        "bad": "failed",
        "slow": "cancelled",
        "cleanup": "succeeded",
        "after": "cancelled",
    }
    assert r.steps["cleanup"].output == "clean"
