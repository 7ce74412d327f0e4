"""dagrelay workers: the Dramatiq side. `dagrelay worker` runs `dramatiq workers`.

Importing this package with `DAGRELAY_TOOLS` set builds the broker and the `run_step`
actor from the environment, so plain `dramatiq workers` works as Dramatiq users expect.
Without it, nothing happens on import: call `workers.broker.setup()` yourself. Nor under
`dagrelay worker` (`DAGRELAY_SUPERVISED`): its supervisor forks the worker processes,
and each builds its own broker then (`workers.supervisor.boot`).
"""

import os

if os.environ.get("DAGRELAY_TOOLS") and not os.environ.get("DAGRELAY_SUPERVISED"):
    from workers.broker import setup as _setup

    broker, runtime = _setup()
