"""The size limit on a run's input: refused up front, before anything is stored or run."""

from __future__ import annotations

import os
from typing import Any

from pydantic_core import to_json

from executor.errors import FlowValidationError

# Inputs travel whole into Redis and into every worker that reads them; large data
# belongs elsewhere (a path, a URL, an object key) with its reference in the input.
DEFAULT_MAX_INPUT_BYTES = 4 * 1024 * 1024
MAX_INPUT_ENV = "DAGRELAY_MAX_INPUT_BYTES"


def max_input_bytes(limit: int | None = None) -> int | None:
    """The limit in force: `limit` if given, else `DAGRELAY_MAX_INPUT_BYTES`, else 4 MiB;
    0 or less means no limit (None).

    Raises:
        FlowValidationError: the environment variable is not a whole number.
    """
    if limit is None:
        raw = os.environ.get(MAX_INPUT_ENV, "").strip()
        try:
            limit = int(raw) if raw else DEFAULT_MAX_INPUT_BYTES
        except ValueError:
            raise FlowValidationError(
                f"{MAX_INPUT_ENV}={raw!r} is not a whole number of bytes"
            ) from None
    return limit if limit > 0 else None


def check_input_size(data: Any, limit: int | None) -> None:
    """Refuse JSON data whose JSON text is larger than `limit` bytes (None: no limit).

    Raises:
        FlowValidationError: one line with the size and the limit.
    """
    if limit is None:
        return
    size = len(to_json(data))
    if size > limit:
        raise FlowValidationError(
            f"input is {_mib(size)} of JSON, over the limit of {_mib(limit)} "
            f"(FlowExecutor(max_input_bytes=...) or {MAX_INPUT_ENV}): pass large data by "
            "reference (a path, a URL) instead"
        )


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 102400 else f"{n} bytes"
