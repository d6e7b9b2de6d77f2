"""4. The API at scale: the polling endpoint and the job list under concurrent load from wrk (a separate
process on loopback), with 1,000 jobs / 1,000,000 points and with 10,000 points, beside /healthz."""

from __future__ import annotations

import json
import random
import subprocess
import threading
from pathlib import Path
from typing import Any

import psutil

from bench.common import Sizes, ensure_wrk, postgres_database
from bench.populate import populate
from shared.store.db import migrate
from tests.processes import Service, base_env
from tests.services import redis_url

WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")
CONCURRENCIES = (8, 16)


def wrk(url: str, seconds: int, connections: int, paths: Path | None = None, key: str | None = None) -> dict[str, Any]:
    """One wrk run (sending `key` as a bearer token when given); its JSON report line, with requests per second
    and milliseconds."""
    env = {"PATHS": str(paths)} if paths else {}
    if key:
        env["AUTH"] = f"Bearer {key}"
    result = subprocess.run(
        [ensure_wrk(), "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(WRK_SCRIPT), url],
        capture_output=True,
        text=True,
        env=env,
        timeout=seconds + 60,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "connections": connections,
        "requests_per_s": round(report["requests"] / (report["duration_us"] / 1e6), 1),
        "p50_ms": round(report["p50_us"] / 1000, 2),
        "p99_ms": round(report["p99_us"] / 1000, 2),
        "errors": report["errors"] + report["non_2xx"],
    }


def write_paths(work: Path, name: str, paths: list[str]) -> Path:
    path = work / f"{name}.paths"
    path.write_text("\n".join(paths) + "\n")
    return path


class PeakMemory:
    """Samples a process's resident memory in the background; `peak` is the highest seen (MiB)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak: float = self.process.memory_info().rss / 2**20
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            rss: int = self.process.memory_info().rss
            self.peak = max(self.peak, rss / 2**20)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak, 1)


def measure(work: Path, jobs: int, points_per_job: int, seconds: int) -> dict[str, Any]:
    """Fill a database, serve it with one API process, and load each endpoint."""
    work.mkdir(parents=True, exist_ok=True)
    with postgres_database() as database_url:
        migrate(database_url)
        job_ids = populate(database_url, jobs, points_per_job)
        service = Service(base_env(work / "data", database_url=database_url, broker_url=redis_url()), work)
        try:
            api = service.start_api("serve")
            idle_rss = psutil.Process(api.process.pid).memory_info().rss / 2**20
            rng = random.Random(0)
            metrics = write_paths(
                work,
                "metrics",
                [
                    f"/v1/jobs/{rng.choice(job_ids)}/metrics?after_step={rng.randrange(max(1, points_per_job - 100))}"
                    "&limit=100"
                    for _ in range(5000)
                ],
            )
            listing = write_paths(
                work,
                "jobs",
                [
                    "/v1/jobs?limit=20" if rng.random() < 0.5 else f"/v1/jobs?limit=20&after={rng.choice(job_ids)}"
                    for _ in range(5000)
                ],
            )
            # A member's key: its requests take the scoped path (the job's project checked on every page).
            key = service.make_key("default", "member")
            wrk(service.url + "/", 2, 16, metrics, key)  # warm the connection pools; not measured
            memory = PeakMemory(api.process.pid)
            results: dict[str, Any] = {"jobs": jobs, "metric_points": jobs * points_per_job}
            for connections in CONCURRENCIES:
                floor = wrk(service.url + "/healthz", seconds, connections)
                rows = {
                    "healthz": floor,
                    "metrics_page_100": wrk(service.url + "/", seconds, connections, metrics, key),
                    "job_list_page_20": wrk(service.url + "/", seconds, connections, listing, key),
                }
                for name in ("metrics_page_100", "job_list_page_20"):
                    rows[name]["throughput_ratio_to_healthz"] = round(
                        rows[name]["requests_per_s"] / floor["requests_per_s"], 3
                    )
                results[f"c{connections}"] = rows
            results["api_rss_mib"] = {"idle": round(idle_rss, 1), "peak_under_load": memory.stop()}
            results["auth"] = auth_cost(work, database_url, service, metrics, key, seconds)
            return results
        finally:
            service.stop()


def auth_cost(
    work: Path, database_url: str, keyed: Service, paths: Path, key: str, seconds: int, connections: int = 8
) -> dict[str, Any]:
    """The polling endpoint with the key check (a member's key: scoped reads) beside the same API run open
    (GRPO_AUTH=off) on the same database, in turns of both orders, so that drift on a shared machine and a warmer
    cache hit both alike."""
    open_api = Service(
        base_env(work / "data-open", database_url=database_url, broker_url=redis_url(), auth="off"), work
    )
    try:
        open_api.start_api("serve")
        wrk(open_api.url + "/", 2, connections, paths)  # warm up; not measured
        turns = []
        for first_open in (True, False, True, False):  # both orders, so that neither always runs on a warmer cache
            runs = {
                "open": lambda: wrk(open_api.url + "/", seconds, connections, paths),
                "keyed": lambda: wrk(keyed.url + "/", seconds, connections, paths, key),
            }
            order = ("open", "keyed") if first_open else ("keyed", "open")
            done = {name: runs[name]() for name in order}
            turns.append((done["open"], done["keyed"]))
    finally:
        open_api.stop()
    off = sum(o["requests_per_s"] for o, _ in turns) / len(turns)
    on = sum(k["requests_per_s"] for _, k in turns) / len(turns)
    return {
        "connections": connections,
        "auth_off_requests_per_s": round(off, 1),
        "auth_on_requests_per_s": round(on, 1),
        "throughput_ratio_on_to_off": round(on / off, 3),
        "errors": sum(o["errors"] + k["errors"] for o, k in turns),
    }


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    large = measure(work / "scale-large", sizes.scale_jobs, sizes.scale_points_per_job, sizes.load_seconds)
    small_jobs = max(1, sizes.scale_jobs // 100)
    small = measure(work / "scale-small", small_jobs, sizes.scale_points_per_job, sizes.load_seconds)
    ratios = {}
    for connections in CONCURRENCIES:
        for name in ("metrics_page_100", "job_list_page_20"):
            ratios[f"{name}_c{connections}"] = round(
                large[f"c{connections}"][name]["requests_per_s"] / small[f"c{connections}"][name]["requests_per_s"], 3
            )
    return {"large": large, "small": small, "large_to_small_throughput": ratios}
