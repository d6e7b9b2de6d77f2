"""One rank of a multi-process job: `python -m worker.rank_main JOB_ID ATTEMPT`, started by `accelerate launch` or
`torchrun` (see worker/distributed.py). Every rank trains; rank 0 also talks to the launcher and writes to the
database."""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import sys
import threading
from typing import Any

PR_SET_PDEATHSIG = 1


def accept_indexed_cpu_locations() -> None:
    """Let `torch.load` restore storages tagged `cpu:N` to the CPU.

    Resuming a multi-process CPU run, transformers loads the optimizer's state with `map_location=args.device`,
    which there is `torch.device("cpu", rank)`; torch knows how to restore `cpu`, not `cpu:0`, and the resume
    fails ("don't know how to restore data location ... (tagged with cpu:0)"). Storages on the CPU are where
    they belong already.
    """
    import torch

    def restore(storage: Any, location: str) -> Any:
        return storage if location.startswith("cpu:") else None

    # After torch's own CPU deserializer (priority 10), which takes plain `cpu`.
    torch.serialization.register_package(11, lambda _storage: None, restore)


def main() -> None:
    """Train this rank's share of the job named on the command line; rank 0 sends the outcome to the launcher."""
    # Die with the process that started this rank: launchers put ranks in sessions of their own, out of reach of
    # the process-group kill that ends a cancelled job.
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the stall watchdog asks where it is stuck
    job_id, attempt = sys.argv[1], int(sys.argv[2])

    from shared.settings import load_settings
    from shared.store.db import Database
    from worker.distributed import connect_to_launcher, is_main_rank
    from worker.runner import train

    accept_indexed_cpu_locations()
    link = None
    if is_main_rank():
        link = connect_to_launcher()
        threading.Thread(target=link.listen, name="launcher-link", daemon=True).start()
    settings = load_settings()
    database = Database.from_settings(settings)
    try:
        outcome = train(settings, database, job_id, attempt, link)
    finally:
        database.dispose()
    if link is not None:
        link.send(outcome)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
