"""Durations and ages for people, the same in the report, the live view and the timeline."""

from __future__ import annotations


def format_seconds(seconds: float | None) -> str:
    """A duration for people: `850 µs`, `12.3 ms`, `1.52 s`, `2m 05s`; `-` for None."""
    if seconds is None:
        return "-"
    if seconds <= 0:
        return "0 s"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m {rest:02d}s"


def format_age(seconds: float) -> str:
    """How long ago, roughly: `8s`, `5m`, `3h 05m`, `2d 04h`."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"
