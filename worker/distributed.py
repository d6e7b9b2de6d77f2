"""Training a job with several processes (`resources.processes`, or `resources.gpus` > 1), through the existing
distributed engines: `accelerate launch` with a preset the project ships (`worker/presets/`: ddp, zero2, zero3,
fsdp) on GPUs, and `torchrun` (what `accelerate launch` itself runs underneath) with gloo on CPUs, where accelerate
would need MPI.

The job's training child becomes the launcher: it starts the ranks (`worker.rank_main`) and relays between its
worker and rank 0, which connects back on a Unix socket: rank 0's progress and outcome go to the worker, the
worker's stop requests (pause, hand-off) go to rank 0, which makes every rank stop at the same step (see
`ControlCallback`). Only rank 0 writes to the database. Every rank dies with its parent (PR_SET_PDEATHSIG), and the
launcher with its process group, so a cancel or a lost worker ends every rank.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

import psutil

from shared.spec.resources import Resources
from worker.protocol import Outcome, StopRequest, WorkerLink, receive, to_wire

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
# How rank 0 finds its launcher: a Unix socket path and the key that authenticates the connection.
RANK_LINK_ENV = "GRPO_RANK_LINK"
RANK_AUTHKEY_ENV = "GRPO_RANK_AUTHKEY"
RELAY_POLL_SECONDS = 0.2
MAX_RELAYED_AT_ONCE = 100
# How long rank 0 may take to connect (each rank imports torch, transformers and TRL afresh).
CONNECT_SECONDS = 600.0


def is_rank_process() -> bool:
    """Whether this process is one rank of a multi-process job (started by `launch`)."""
    return RANK_LINK_ENV in os.environ


def is_main_rank() -> bool:
    """Rank 0, or a job of one process: the process that writes to the database and talks to the worker."""
    return int(os.environ.get("RANK", "0")) == 0


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (for the ranks' rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def launch_command(
    resources: Resources, job_id: str, attempt: int, *, on_gpus: bool, mixed_precision: str, port: int
) -> list[str]:
    """The command that starts the job's ranks."""
    ranks = ["-m", "worker.rank_main", job_id, str(attempt)]
    processes = str(resources.process_count())
    if not on_gpus:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            processes,
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
            *ranks,
        ]
    preset = PRESETS_DIR / f"{resources.distributed or 'ddp'}.yaml"
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(preset),
        "--num_processes",
        processes,
        "--num_machines",
        "1",
        "--main_process_port",
        str(port),
        "--mixed_precision",
        mixed_precision,
        *ranks,
    ]


def _forward_stack_requests(launcher: subprocess.Popen[bytes]) -> None:
    """The worker asks for a stuck job's stack with SIGUSR1 to this process: the ranks are what may be stuck."""

    def forward(_signum: int, _frame: Any) -> None:
        with contextlib.suppress(psutil.Error):
            for process in psutil.Process(launcher.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    process.send_signal(signal.SIGUSR1)

    signal.signal(signal.SIGUSR1, forward)


def run_ranks(command: list[str], link: WorkerLink, log_tail: Callable[[], str]) -> Outcome:
    """Start the ranks, relay until they end, and return rank 0's outcome (or why there is none).

    `log_tail()` gives the end of the job's log, for a launch that ended without an outcome.
    """
    folder = tempfile.mkdtemp(prefix="grpo-ranks-")  # short: a Unix socket's path has at most 107 bytes
    path = os.path.join(folder, "link")
    key = secrets.token_bytes(16)
    listener = Listener(path, family="AF_UNIX", authkey=key)
    rank_zero: list[Connection] = []
    threading.Thread(target=lambda: rank_zero.append(listener.accept()), name="rank-0-accept", daemon=True).start()
    env = {**os.environ, RANK_LINK_ENV: path, RANK_AUTHKEY_ENV: key.hex()}
    launcher = subprocess.Popen(command, env=env)  # in this process group: a cancel's killpg reaches it
    _forward_stack_requests(launcher)
    outcome: Outcome | None = None
    stop_sent = False
    connect_deadline = time.monotonic() + CONNECT_SECONDS
    try:
        while True:
            ended = launcher.poll() is not None
            connection = rank_zero[0] if rank_zero else None
            if connection is not None:
                if link.stop_requested.is_set() and not stop_sent:
                    connection.send(to_wire(StopRequest(link.stop_reason)))
                    stop_sent = True
                with contextlib.suppress(EOFError, OSError):
                    # What has arrived, then back to the top: rank 0 reports every step, and a loop that waited
                    # for a quiet moment would never see the worker's stop request while training runs.
                    waiting = connection.poll(0 if ended else RELAY_POLL_SECONDS)
                    relayed = 0
                    while waiting and (ended or relayed < MAX_RELAYED_AT_ONCE):  # once ended, all that is left
                        relayed += 1
                        message = receive(connection)
                        if isinstance(message, Outcome):
                            outcome = message
                        elif message is not None:
                            link.send(message)  # progress: the stall watchdog's
                        waiting = connection.poll(0)
            elif time.monotonic() > connect_deadline:
                launcher.kill()
                return _no_outcome(f"rank 0 did not start within {CONNECT_SECONDS:g} s", log_tail())
            else:
                time.sleep(RELAY_POLL_SECONDS)
            if ended:
                break
    finally:
        if launcher.poll() is None:
            launcher.kill()
        launcher.wait()
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)
    if outcome is not None:
        return outcome
    return _no_outcome(f"the launcher exited with code {launcher.returncode}", log_tail())


def _no_outcome(why: str, log_tail: str) -> Outcome:
    return Outcome.failed(
        f"the job's training processes ended without a result ({why}); the end of train.log:\n{log_tail}"
    )


def connect_to_launcher() -> WorkerLink:
    """Rank 0's link to the launcher (which relays to the worker)."""
    from multiprocessing.connection import Client

    connection = Client(
        os.environ[RANK_LINK_ENV], family="AF_UNIX", authkey=bytes.fromhex(os.environ[RANK_AUTHKEY_ENV])
    )
    return WorkerLink(connection)
