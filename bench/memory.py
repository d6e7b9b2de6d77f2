"""6. Memory: the worker (its main process, forkserver and their children) between jobs: it must come back to
its idle footprint, with no growth across jobs. The API process idle, beside a bare FastAPI app on the same uvicorn
(the floor any FastAPI service pays); its peak under load is measured in api_scale."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import Sizes, bench_job, production_service, tiny_model, wait_finished
from tests.services import free_port

SETTLE_SECONDS = 0.5


def _rss_mib(process: psutil.Process) -> float:
    """Resident memory of a process and everything under it, in MiB."""
    total: int = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total / 2**20


BARE_APP = """
import fastapi, uvicorn, sys
app = fastapi.FastAPI()
@app.get("/healthz")
def healthz():
    return {"status": "ok"}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _bare_fastapi_rss_mib() -> float:
    """A FastAPI app of one route on uvicorn, after its first request: the floor of an API process."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        time.sleep(SETTLE_SECONDS)
        return _rss_mib(psutil.Process(process.pid))
    finally:
        process.terminate()
        process.wait()


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    spec = bench_job(tiny_model(work), steps=20)
    bare_api = _bare_fastapi_rss_mib()
    with production_service(work / "memory") as service:
        api = next(p for p in service.processes if p.log_path.name == "serve.log")
        service.http.get("/v1/jobs")  # a first request of each kind, as the bare app had
        api_idle = _rss_mib(psutil.Process(api.process.pid))
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
        "api_rss_mib": {"idle": round(api_idle, 1), "bare_fastapi": round(bare_api, 1)},
        "api_to_bare_ratio": round(api_idle / bare_api, 2),
    }
