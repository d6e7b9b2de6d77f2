"""6. Memory: the worker (its main process, forkserver and their children) between jobs: it must come back to
its idle footprint, with no growth across jobs. The API process's memory is measured under load in api_scale."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import Sizes, bench_job, production_service, tiny_model, wait_finished

SETTLE_SECONDS = 0.5


def _rss_mib(process: psutil.Process) -> float:
    """Resident memory of a process and everything under it, in MiB."""
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total / 2**20


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    spec = bench_job(tiny_model(work), steps=20)
    with production_service(work / "memory") as service:
        worker = next(p for p in service.processes if p.log_path.name == "worker.log")
        tree = psutil.Process(worker.process.pid)
        # A first job makes sure the forkserver has finished importing torch and TRL: that is the idle footprint.
        wait_finished(service, service.submit(spec)["id"])
        time.sleep(SETTLE_SECONDS)
        idle = _rss_mib(tree)
        after: list[float] = []
        for _ in range(sizes.memory_jobs):
            wait_finished(service, service.submit(spec)["id"])
            time.sleep(SETTLE_SECONDS)  # the training child has exited
            after.append(_rss_mib(tree))
    return {
        "jobs": sizes.memory_jobs,
        "worker_rss_mib": {
            "idle": round(idle, 1),
            "after_last_job": round(after[-1], 1),
            "peak_between_jobs": round(max(after), 1),
        },
        "last_to_idle_ratio": round(after[-1] / idle, 3),
    }
