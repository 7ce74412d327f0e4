"""The supported ranges of dramatiq and redis-py: pyproject's bounds, the lowest pins that
`make compat` tests (constraints/lowest.txt) and the README's table say the same."""

from __future__ import annotations

import os
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
# Libraries whose private parts dagrelay uses: bounded above and tested at their lowest.
INTERNALS = ("dramatiq", "redis")


def bounds() -> dict[str, SpecifierSet]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in data["project"]["dependencies"]]
    return {r.name: r.specifier for r in reqs if r.name in INTERNALS}


def lowest_pins(text: str | None = None) -> dict[str, Version]:
    if text is None:
        text = (ROOT / "constraints" / "lowest.txt").read_text()
    pins: dict[str, Version] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, pinned = line.partition("==")
            assert sep, f"constraints/lowest.txt: {line!r} is not an exact pin"
            pins[name.strip()] = Version(pinned.strip())
    return pins


def lower_bound(spec: SpecifierSet) -> Version:
    lows = [Version(s.version) for s in spec if s.operator == ">="]
    assert len(lows) == 1, f"{spec}: one >= bound expected"
    return lows[0]


def upper_major(spec: SpecifierSet) -> int:
    highs = [Version(s.version) for s in spec if s.operator == "<"]
    assert len(highs) == 1, f"{spec}: one < bound expected (the first untested major)"
    assert highs[0].minor == highs[0].micro == 0, f"{spec}: bound at a major"
    return highs[0].major


def disagreements(spec: dict[str, SpecifierSet], pins: dict[str, Version]) -> list[str]:
    """What is wrong between pyproject's bounds and the lowest pins (empty: they agree)."""
    wrong = [f"{name}: no lowest pin" for name in spec if name not in pins]
    wrong += [f"{name}: pinned but not a bounded dependency" for name in pins if name not in spec]
    for name in sorted(set(spec) & set(pins)):
        pin, low = pins[name], lower_bound(spec[name])
        if pin not in spec[name]:
            wrong.append(f"{name}=={pin} is outside {spec[name]}")
        elif (pin.major, pin.minor) != (low.major, low.minor):
            wrong.append(f"{name}=={pin} is not the lowest supported {spec[name]}")
    return wrong


def test_pyproject_bounds_and_the_lowest_pins_agree():
    spec = bounds()
    assert set(spec) == set(INTERNALS)
    for name in INTERNALS:
        upper_major(spec[name])
    assert disagreements(spec, lowest_pins()) == []


def test_a_pin_off_the_bounds_is_caught():
    spec = {"dramatiq": SpecifierSet(">=1.17,<3"), "redis": SpecifierSet(">=5,<8")}
    assert disagreements(spec, lowest_pins("dramatiq==1.17.0\nredis==5.0.0\n")) == []
    assert disagreements(spec, lowest_pins("dramatiq==1.16.0\nredis==5.0.0\n")) == [
        "dramatiq==1.16.0 is outside <3,>=1.17"
    ]
    assert disagreements(spec, lowest_pins("dramatiq==2.0.0\nredis==5.0.0\n")) == [
        "dramatiq==2.0.0 is not the lowest supported <3,>=1.17"
    ]
    assert disagreements(spec, lowest_pins("dramatiq==1.17.0\n")) == ["redis: no lowest pin"]


def test_the_readme_states_the_supported_ranges():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Supported versions", 1)[1].split("\n## ", 1)[0]
    for name, spec in bounds().items():
        row = re.search(rf"^\| `{name}` \| (.+?) \| (.+?) \|", section, re.M)
        assert row, f"README: no row for {name} under 'Supported versions'"
        low, high = lower_bound(spec), upper_major(spec)
        assert row.group(1).strip() == f"{low} to {high - 1}.x", row.group(0)
        assert row.group(2).strip().startswith(f"{lowest_pins()[name]} "), row.group(0)


@pytest.mark.skipif(not os.environ.get("DAGRELAY_LOWEST"), reason="only in `make compat`")
def test_make_compat_runs_on_the_lowest_pins():
    for name, pin in lowest_pins().items():
        assert Version(version(name)) == pin, f"{name} {version(name)} installed, not {pin}"
