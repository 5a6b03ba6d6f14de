"""Data loader workers that leave stop signals to the main process.

A cluster scheduler sends SIGTERM (and a terminal Ctrl-C sends SIGINT) to the whole process group,
workers included. A worker killed by it makes the main process fail with "DataLoader worker ... is
killed by signal" before it can save the current step. `quiet_worker_init` makes workers ignore both
signals: the main process decides when to stop and shuts its workers down itself. Workers still exit
when the main process dies (torch's worker watchdog), so none is left behind.
"""

from __future__ import annotations

import os
import signal


def quiet_worker_init(worker_id: int) -> None:
    """`DataLoader(worker_init_fn=...)`: ignore SIGTERM and SIGINT, then seed as Lightning would."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.environ.get("PL_SEED_WORKERS") == "1":  # seed_everything(workers=True), which this init replaces
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)
