"""The `grpo` client commands against a running embedded service, and the README's demo command itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.processes import Service, base_env
from tests.specs import job_spec

ROOT = Path(__file__).resolve().parents[2]


def grpo(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        env={**(env or os.environ), "COLUMNS": "200"},
        timeout=timeout,
    )


def test_submit_watch_prints_every_step_and_exits_zero(
    embedded_service: Service, tiny_model: Path, tmp_path: Path
) -> None:
    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps(job_spec(tiny_model)))
    submitted = grpo("submit", str(spec_file), "--url", embedded_service.url, "--watch")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    lines = submitted.stdout.splitlines()
    job_id = lines[0].strip()
    assert re.fullmatch(r"job-[0-9a-f]{16}", job_id)
    assert "reward" in lines[1] and "reward_std" in lines[1] and "kl" in lines[1]
    rows = [line.split() for line in lines if re.match(r"\s+\d+\s", line)]
    assert [int(r[0]) for r in rows] == list(range(1, 9))
    assert f"job {job_id} succeeded" in submitted.stdout

    # Watching a finished job prints its whole history again.
    watched = grpo("watch", job_id, "--url", embedded_service.url)
    assert watched.returncode == 0
    assert [line.split()[0] for line in watched.stdout.splitlines() if re.match(r"\s+\d+\s", line)] == [
        str(s) for s in range(1, 9)
    ]


def test_submit_of_a_bad_spec_prints_each_problem_and_exits_two(embedded_service: Service, tmp_path: Path) -> None:
    spec = job_spec("m")
    spec["args"]["num_generation"] = 4
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(json.dumps(spec))  # JSON is YAML
    result = grpo("submit", str(spec_file), "--url", embedded_service.url)
    assert result.returncode == 2
    assert "did you mean 'num_generations'?" in result.stderr


def test_watch_of_a_failed_job_exits_one(embedded_service: Service, tiny_model: Path) -> None:
    job = embedded_service.submit(job_spec(str(tiny_model) + "-missing"))
    embedded_service.wait_finished(job["id"])
    result = grpo("watch", job["id"], "--url", embedded_service.url)
    assert result.returncode == 1
    assert "job failed: finding the model" in result.stderr


def test_the_readmes_demo_command_succeeds(tmp_path: Path) -> None:
    """`make demo`, as the README says, in a data dir of its own (the venv is the one the test run uses)."""
    env = base_env(tmp_path / "data")
    result = subprocess.run(["make", "-C", str(ROOT), "demo"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "job succeeded after 80 logged steps: mean reward" in " ".join(result.stdout.split())
    rows = [line.split() for line in result.stdout.splitlines() if re.match(r"\s+\d+\s", line)]
    assert [int(r[0]) for r in rows] == list(range(1, 81))
    rewards = [float(r[1]) for r in rows]
    assert sum(rewards[-16:]) / 16 > sum(rewards[:16]) / 16 + 3  # the demo shows learning
    assert all(r[3] != "-" for r in rows)  # kl on every step


def test_stopping_grpo_up_leaves_no_process_behind(tmp_path: Path) -> None:
    import psutil

    service = Service(base_env(tmp_path / "data"), tmp_path)
    try:
        up = service.start_api("up")
        up.wait_for_log("ready.")  # the worker is up, with its forkserver
        family = psutil.Process(up.process.pid).children(recursive=True)
        assert any("worker" in " ".join(p.cmdline()) for p in family)
        assert any("forkserver" in " ".join(p.cmdline()) for p in family)
        up.process.terminate()  # SIGTERM, as `docker stop` or a process manager sends
        assert up.process.wait(timeout=30) != 0
        _gone, alive = psutil.wait_procs(family, timeout=30)
        assert alive == [], [" ".join(p.cmdline()) for p in alive]
    finally:
        service.stop()
