"""dagrelay workers: the Dramatiq side. `dagrelay worker` runs `dramatiq workers`.

Importing this package with `DAGRELAY_TOOLS` set builds the broker and the `run_step`
actor from the environment, so plain `dramatiq workers` works as Dramatiq users expect.
Without it, nothing happens on import: call `workers.broker.setup()` yourself.
"""

import os

if os.environ.get("DAGRELAY_TOOLS"):
    from workers.broker import setup as _setup

    broker, runtime = _setup()
