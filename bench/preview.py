"""7. Reward preview latency: POST /v1/rewards/preview of the seed's three Python rewards (and of the math-verify
`accuracy` built-in), beside its floors: a /healthz round trip on the same server, and starting a bare Python
interpreter (each preview starts a sandbox process)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Sizes, embedded_service, summary_ms
from tests.processes import Service

ROOT = Path(__file__).resolve().parent.parent
COMPLETIONS = [
    "<think>Two plus two makes four, surely.</think><answer>4</answer>",
    "<think>hm</think> <answer>4</answer>",
    "the answer is 5",
    "a" * 20,
]


def _timed_posts(service: Service, body: dict[str, Any], count: int) -> list[float]:
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        response = service.http.post("/v1/rewards/preview", json=body)
        seconds.append(time.perf_counter() - started)
        results = response.json()["results"]
        if response.status_code != 200 or any(r["error"] for r in results):
            raise RuntimeError(f"preview failed: {response.text}")
    return seconds


def _interpreter_starts(count: int) -> list[float]:
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-c", "pass"], check=True)
        seconds.append(time.perf_counter() - started)
    return seconds


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    seed = json.loads((ROOT / "examples" / "seed_job.json").read_text())
    columns = {"answers": ["4"] * len(COMPLETIONS)}
    seed_body = {"reward_funcs": seed["reward_funcs"], "completions": COMPLETIONS, "columns": columns}
    accuracy_body = {
        "reward_funcs": [{"type": "builtin", "name": "accuracy", "params": {"column": "answers"}}],
        "completions": COMPLETIONS,
        "columns": columns,
    }
    count = max(sizes.dispatch_jobs, 3)
    with embedded_service(work / "preview") as service:
        _timed_posts(service, seed_body, 2)  # warm the server's imports
        healthz = []
        for _ in range(count):
            started = time.perf_counter()
            service.http.get("/healthz")
            healthz.append(time.perf_counter() - started)
        seed_rewards = summary_ms(_timed_posts(service, seed_body, count))
        accuracy = summary_ms(_timed_posts(service, accuracy_body, count))
    interpreter = summary_ms(_interpreter_starts(count))
    return {
        "seed_rewards": seed_rewards,
        "accuracy": accuracy,
        "healthz_floor": summary_ms(healthz),
        "interpreter_floor": interpreter,
        "seed_p50_ratio_to_interpreter": round(seed_rewards["p50_ms"] / max(interpreter["p50_ms"], 0.01), 2),
    }
