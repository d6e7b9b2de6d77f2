"""1. What the service costs on top of TRL: the same job as a bare script and through the service."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Sizes,
    bench_job,
    embedded_service,
    parse_time,
    production_service,
    tiny_model,
    wait_finished,
)
from tests.processes import Service


def run_bare(spec: dict[str, Any], work: Path) -> dict[str, float]:
    """The baseline script in a fresh interpreter: its TRL train_runtime and its whole wall time."""
    spec_file = work / "bare-spec.json"
    spec_file.write_text(json.dumps(spec))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "bench.bare_trl", str(spec_file), str(work / "bare-out")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"the bare TRL script failed:\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return {"train_runtime": measured["train_runtime"], "process_seconds": wall}


# A client polling every 20 ms on this 2-core machine takes CPU from the training itself (measured: +9% training
# time). The job's own `finished_at` gives the end to the microsecond, so the benchmark polls gently.
POLL_SECONDS = 0.5


def run_service(service: Service, spec: dict[str, Any]) -> dict[str, float]:
    """One job through the service: TRL's train_runtime in the worker, and POST-to-succeeded seconds."""
    posted = time.time()
    job = service.submit(spec)
    final = wait_finished(service, job["id"], poll=POLL_SECONDS)
    return {
        "train_runtime": final["summary"]["train_runtime"],
        "post_to_succeeded": parse_time(final["finished_at"]) - posted,
    }


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    spec = bench_job(tiny_model(work), sizes.training_steps)
    bare: list[dict[str, float]] = []
    services: dict[str, list[dict[str, float]]] = {"embedded": [], "postgres_redis": []}
    with (
        embedded_service(work / "overhead-embedded") as embedded,
        production_service(work / "overhead-production") as production,
    ):
        for service in (embedded, production):
            run_service(service, spec)  # the first job of a worker warms its forkserver; not measured
        for _ in range(sizes.repetitions):  # interleaved, so that machine noise falls on all three alike
            bare.append(run_bare(spec, work))
            services["embedded"].append(run_service(embedded, spec))
            services["postgres_redis"].append(run_service(production, spec))

    bare_train = statistics.median(r["train_runtime"] for r in bare)
    bare_process = statistics.median(r["process_seconds"] for r in bare)
    results: dict[str, Any] = {
        "steps": sizes.training_steps,
        "repetitions": sizes.repetitions,
        "bare_trl": {"train_runtime_s": round(bare_train, 3), "process_s": round(bare_process, 3)},
    }
    for name, runs in services.items():
        train = statistics.median(r["train_runtime"] for r in runs)
        end_to_end = statistics.median(r["post_to_succeeded"] for r in runs)
        results[name] = {
            "train_runtime_s": round(train, 3),
            "train_time_ratio": round(train / bare_train, 3),
            "post_to_succeeded_s": round(end_to_end, 3),
            "extra_s_vs_bare_process": round(end_to_end - bare_process, 3),
        }
    return results
