"""A stopping worker starts nothing new, whatever a round trip brings back after the stop
(issue 17, item 4): fakeredis, the pipeline driven by hand.

A take or a group commit may wait out a Redis outage and come back, after the worker was
told to stop, with units it claimed: they are given back to the queue at once, their
attempt unspent, and another worker runs them.
"""

from __future__ import annotations

from typing import Any

from executor import Flow, Step
from tests.faults.support import read_count
from tests.test_distributed import events_of, wait_until


def fan(tmp: Any, n: int = 3, seconds: float = 0.0) -> Flow:
    steps = [Step(id="a", tool="counted", inputs={"counter": str(tmp / "a"), "value": 1})]
    steps += [
        Step(
            id=f"b{i}",
            tool="counted",
            inputs={"counter": str(tmp / f"b{i}"), "seconds": seconds, "value": "$steps.a"},
        )
        for i in range(n)
    ]
    return Flow(name="fan", steps=steps)


def test_units_a_take_claims_after_the_stop_are_given_back_unstarted(fake, tmp_path, monkeypatch):
    handle = fake.executor.submit(fan(tmp_path))
    real = fake.store.take

    def take_across_the_stop(*args: Any, **kwargs: Any) -> Any:
        fake.pipeline.draining = True  # SIGTERM while this round trip waited for Redis
        return real(*args, **kwargs)

    monkeypatch.setattr(fake.store, "take", take_across_the_stop)
    fake.pipeline.take(handle.run_id, "dagrelay", 1)
    assert wait_until(lambda: fake.store.all_statuses(handle.run_id)["a"] == "queued", 5)
    assert read_count(tmp_path / "a") == 0
    # Its slot comes back too (the give-back settles on the pipeline's loop, a moment
    # after the status reads queued).
    assert wait_until(lambda: fake.pipeline.pool.running() == 0, 5)
    assert any(e.get("status") == "requeued" for e in events_of(fake.store, handle.run_id))
    # Another worker (this one, un-stopped) takes it from the queue: attempt 1 still.
    monkeypatch.setattr(fake.store, "take", real)
    fake.pipeline.draining = False
    fake.start_worker()
    result = handle.wait(timeout=10)
    assert result.status == "succeeded"
    assert [a.number for a in result.steps["a"].attempts] == [1]
    assert read_count(tmp_path / "a") == 1


def test_dependents_a_completion_claims_after_the_stop_are_given_back(fake, tmp_path, monkeypatch):
    """The completion's round trip claims dependents ahead; it returns after the stop:
    none of them starts here, each goes back to the queue with its first attempt."""
    handle = fake.executor.submit(fan(tmp_path, n=2))
    real = fake.pipeline.coordinator.settle

    def settle_across_the_stop(*args: Any, **kwargs: Any) -> Any:
        fake.pipeline.draining = True
        return real(*args, **kwargs)

    monkeypatch.setattr(fake.pipeline.coordinator, "settle", settle_across_the_stop)
    fake.pipeline.take(handle.run_id, "dagrelay", 1)
    statuses = lambda: fake.store.all_statuses(handle.run_id)  # noqa: E731
    assert wait_until(lambda: statuses()["a"] == "succeeded", 5)
    assert wait_until(lambda: statuses()["b0"] == statuses()["b1"] == "queued", 5), statuses()
    assert read_count(tmp_path / "b0") == read_count(tmp_path / "b1") == 0
    assert wait_until(lambda: fake.pipeline.pool.running() == 0, 5)
    monkeypatch.setattr(fake.pipeline.coordinator, "settle", real)
    fake.pipeline.draining = False
    fake.start_worker()
    result = handle.wait(timeout=10)
    assert result.status == "succeeded"
    for b in ("b0", "b1"):
        assert [a.number for a in result.steps[b].attempts] == [1]
        assert read_count(tmp_path / b) == 1
