"""Retry policy of a step: how many attempts, which errors, how long between."""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field


class RetryPolicy(BaseModel):
    """How a step is retried after a failed attempt.

    `retry_on` names exception classes (`"TimeoutError"`, `"mypkg.errors.Transient"`);
    a bare name matches any class of that name in the exception's MRO, a dotted one
    its full `module.qualname`. Empty means any exception is retried.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=1, ge=1, le=1000)
    backoff: float = Field(default=0.0, ge=0.0)
    multiplier: float = Field(default=2.0, ge=1.0)
    max_backoff: float = Field(default=60.0, ge=0.0)
    jitter: bool = False
    retry_on: tuple[str, ...] = ()

    def matches(self, exc: BaseException) -> bool:
        """Whether `exc` is an error this policy retries."""
        if not self.retry_on:
            return True
        names: set[str] = set()
        for cls in type(exc).__mro__:
            names.add(cls.__name__)
            names.add(f"{cls.__module__}.{cls.__qualname__}")
        return any(name in names for name in self.retry_on)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        base = min(self.backoff * self.multiplier ** (attempt - 1), self.max_backoff)
        if self.jitter and base > 0:
            # "Full jitter": spreads retries of many steps that failed together.
            return random.uniform(0, base)
        return base

    def next_delay(self, attempt: int, exc: BaseException) -> float | None:
        """The wait before another attempt, or None when the step has failed for good."""
        if attempt >= self.max_attempts or not self.matches(exc):
            return None
        return self.delay(attempt)


NO_RETRY = RetryPolicy()
