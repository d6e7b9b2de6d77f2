"""The benchmarks at tiny sizes, so that `make bench` cannot rot: every section runs and reports its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_benchmark_runs_and_reports_beside_its_baseline(tmp_path: Path) -> None:
    results_file, markdown = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--results", str(results_file), "--markdown", str(markdown)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    results = json.loads(results_file.read_text())
    assert set(results) == {
        "run",
        "overhead",
        "dispatch",
        "metric_latency",
        "api_scale",
        "ingest",
        "memory",
        "preview",
        "series",
        "tools",
    }

    for backend in ("embedded", "postgres_redis"):
        assert results["overhead"][backend]["train_time_ratio"] > 0
        assert results["metric_latency"][backend]["n"] == 10
    for broker in ("embedded", "redis"):
        assert results["dispatch"][broker]["service"]["submit_to_running"]["n"] == 3
        assert results["dispatch"][broker]["celery_noop_floor"]["submit_to_start"]["p50_ms"] > 0
    large = results["api_scale"]["large"]
    assert large["c8"]["metrics_page_100"]["requests_per_s"] > 0
    assert all(row["errors"] == 0 for row in large["c8"].values())
    assert large["auth"]["errors"] == 0 and large["auth"]["throughput_ratio_on_to_off"] > 0
    assert results["ingest"]["postgres"]["lost"] == results["ingest"]["sqlite"]["lost"] == 0
    assert results["memory"]["worker_rss_mib"]["idle"] > 0
    assert results["memory"]["api_rss_mib"]["idle"] > results["memory"]["api_rss_mib"]["bare_fastapi"] > 0
    assert results["preview"]["seed_rewards"]["n"] == results["preview"]["accuracy"]["n"] == 3
    assert results["preview"]["interpreter_floor"]["p50_ms"] > 0
    assert (
        results["metric_latency"]["embedded_stream"]["n"]
        == results["metric_latency"]["postgres_redis_stream"]["n"]
        == 10
    )
    assert results["series"]["points"] == 3000 and 500 <= results["series"]["overview_points_returned"] <= 1000
    assert results["series"]["zoom_500_steps"]["p50_ms"] > 0 and results["series"]["healthz_floor"]["p50_ms"] > 0

    table = markdown.read_text()
    assert "| 1. training time, 5 steps, embedded |" in table
    assert "| 4. metrics page of 100, 20 jobs / 1,000 points, 8 connections |" in table
    assert "| 7. reward preview, the seed's 3 Python rewards (p50/p95, n=3) |" in table
    assert "| 3. on_log -> arrives on the live stream, embedded (p50/p99) |" in table
    assert "| 8. dashboard series of a 3,000-point job, 7 charts, 1,000 buckets (p50/p95) |" in table
