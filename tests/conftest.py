"""Configuration shared by the whole test suite.

* The repository root is importable, so `tests.conformance.tools` names the
  conformance tools the same way in this process and in worker processes
  (`dagrelay worker --tools tests.conformance.tools`).
* Hypothesis: no per-example deadline (timing on a loaded 2-core machine varies);
  tests choose their own modest `max_examples`. `HYPOTHESIS_PROFILE=...` overrides.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The `fake` fixture (fakeredis + an in-process worker runtime), for every module.
pytest_plugins = ["tests.support.fakes"]

settings.register_profile("dagrelay", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dagrelay"))
