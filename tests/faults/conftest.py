"""Fixtures of the fault suite: a fresh cluster per test, always torn down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.faults.support import MEASURED, FaultCluster


@pytest.fixture
def make_cluster() -> Iterator[Callable[..., FaultCluster]]:
    """`make_cluster(appendonly=True)` → a `FaultCluster`, closed after the test."""
    made: list[FaultCluster] = []

    def make(**kwargs: Any) -> FaultCluster:
        c = FaultCluster(**kwargs)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASURED:
        terminalreporter.section("fault recovery times (measured)")
        for name, seconds in sorted(MEASURED.items()):
            terminalreporter.write_line(f"{name}: {seconds:.2f} s")
