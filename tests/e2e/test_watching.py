"""Watching a job learn, through a real embedded service (`grpo up`) and real HTTP: the live stream (with a
reconnect mid-job), samples of the completions, chart series, exports, Prometheus' /metrics, TRL's own
`report_to`, and the terminal commands (`grpo watch` under a pseudo-terminal, `grpo jobs`, `grpo events`)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cli.client import sse_messages
from tests.conftest import FAST_LIFECYCLE
from tests.processes import Service, base_env
from tests.specs import job_spec, python_reward

STEPS = 24
# A reward that takes a moment, so that a job is still running when a test reconnects or watches it.
SLOW = python_reward(
    "import time\ndef slow(completions, **kwargs):\n    time.sleep(0.15)\n    return [0.0 for _ in completions]\n"
)
SAMPLES_PER_STEP, SAMPLE_STEPS_KEPT = 4, 5


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One `grpo up` for the module, keeping 4 samples of each of the newest 5 steps."""
    root = tmp_path_factory.mktemp("watching")
    settings = {
        **FAST_LIFECYCLE,
        "samples_per_step": str(SAMPLES_PER_STEP),
        "sample_steps_kept": "5",
        "sample_interval_seconds": "0",  # every logged step
    }
    running = Service(base_env(root / "data", **settings), root)
    try:
        running.start_api("up")
        yield running
    finally:
        running.stop()


def slow_job(model: Path, steps: int = STEPS, **overrides: Any) -> dict[str, Any]:
    spec = job_spec(model, reward_funcs=[{"type": "builtin", "name": "length", "params": {"ideal_length": 6}}, SLOW])
    spec["args"]["max_steps"] = steps
    spec.update(overrides)
    return spec


def test_the_stream_sends_every_step_once_in_order_and_a_reconnect_misses_nothing(
    service: Service, tiny_model: Path
) -> None:
    job = service.submit(slow_job(tiny_model))
    first: list[dict[str, str]] = []
    with service.http.stream("GET", f"/v1/jobs/{job['id']}/stream", timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for message in sse_messages(response):
            first.append(message)
            if sum(m["event"] == "metric" for m in first) == 5:
                break
    assert first[0]["event"] == "status"
    assert service.job(job["id"])["status"] == "running"  # the reconnect below happens mid-job

    second: list[dict[str, str]] = []
    headers = {"Last-Event-ID": first[-1]["id"]}
    with service.http.stream("GET", f"/v1/jobs/{job['id']}/stream", headers=headers, timeout=120) as response:
        second = list(sse_messages(response))  # the server ends the stream when the job ends

    steps = [json.loads(m["data"])["step"] for m in first + second if m["event"] == "metric"]
    assert steps == list(range(1, STEPS + 1))  # each step once, in order, across the reconnect
    metric = json.loads(next(m["data"] for m in second if m["event"] == "metric"))
    assert {"reward", "reward_std", "kl", "rewards/slow/mean"} <= set(metric["metrics"])
    assert second[-1]["event"] == "end"
    assert json.loads(second[-1]["data"])["status"] == "succeeded"
    statuses = [json.loads(m["data"])["status"] for m in second if m["event"] == "status"]
    assert statuses[-1] == "succeeded"
    streamed = [json.loads(m["data"]) for m in first + second if m["event"] == "event"]
    assert streamed[0]["message"] == "job queued"
    assert [e["id"] for e in streamed] == [e["id"] for e in service.events(job["id"])]  # each event once
    ids = [m["id"] for m in first + second if m["event"] in ("metric", "event")]
    assert len(ids) == len(set(ids))

    # What the stream sent is what the polling endpoint holds.
    assert [p["step"] for p in service.all_metrics(job["id"])] == steps

    # Samples: 4 per step, of the newest 5 steps, with each reward function's score and the advantage.
    response = service.http.get(f"/v1/jobs/{job['id']}/samples", params={"step": STEPS})
    samples = response.json()["data"]
    assert len(samples) == SAMPLES_PER_STEP
    assert [s["index"] for s in samples] == list(range(SAMPLES_PER_STEP))
    for sample in samples:
        assert sample["prompt"] in ("What is 2+2?", "Say hi.")
        assert isinstance(sample["completion"], str)
        assert set(sample["rewards"]) == {"length", "slow"} and sample["rewards"]["slow"] == 0.0
        assert sample["rewards"]["length"] == -abs(6 - len(sample["completion"]))
        assert isinstance(sample["advantage"], float)
    kept = service.http.get(f"/v1/jobs/{job['id']}/samples", params={"limit": 500}).json()["data"]
    assert sorted({s["step"] for s in kept}) == list(range(STEPS - SAMPLE_STEPS_KEPT + 1, STEPS + 1))
    latest = service.http.get(f"/v1/jobs/{job['id']}/samples", params={"latest": "true"}).json()["data"]
    assert {s["step"] for s in latest} == {STEPS}
    assert service.http.get(f"/v1/jobs/{job['id']}/samples", params={"step": 1}).json()["data"] == []

    # Chart series: the whole run downsampled by the server, a small range at full resolution.
    overview = service.http.get(f"/v1/jobs/{job['id']}/series", params={"max_points": 6}).json()
    assert overview["keys"][:3] == ["reward", "reward_std", "kl"] and "rewards/slow/mean" in overview["keys"]
    assert overview["downsampled"] and overview["points"] == STEPS and len(overview["steps"]) <= 6
    zoom = service.http.get(
        f"/v1/jobs/{job['id']}/series", params={"keys": "reward", "from_step": 3, "to_step": 7}
    ).json()
    rewards = {p["step"]: p["metrics"]["reward"] for p in service.all_metrics(job["id"])}
    assert zoom["steps"] == [3, 4, 5, 6, 7] and not zoom["downsampled"]
    assert zoom["values"]["reward"] == pytest.approx([rewards[s] for s in range(3, 8)])

    # Exports: CSV with a column per key, JSON Lines as the metrics endpoint's points.
    exported = service.http.get(f"/v1/jobs/{job['id']}/metrics/export", params={"format": "csv"})
    assert exported.headers["content-type"].startswith("text/csv")
    assert f'filename="{job["id"]}-metrics.csv"' in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(r["step"]) for r in rows] == steps
    assert [float(r["reward"]) for r in rows] == pytest.approx([rewards[s] for s in steps])
    lines = service.http.get(f"/v1/jobs/{job['id']}/metrics/export", params={"format": "jsonl"}).text.splitlines()
    assert [json.loads(line)["step"] for line in lines] == steps


def test_a_stream_with_a_cursor_it_did_not_write_is_a_422_and_an_unknown_job_a_404(service: Service) -> None:
    jobs = service.http.get("/v1/jobs", params={"limit": 1}).json()["data"]
    job_id = jobs[0]["id"] if jobs else "job-0000000000000000"
    bad = service.http.get(f"/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 422 and "attempt.step.event" in bad.json()["error"]["message"]
    assert service.http.get("/v1/jobs/job-0000000000000000/stream").status_code == 404


def _scrape(service: Service) -> dict[str, float]:
    response = service.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def test_prometheus_metrics_parse_and_move_when_a_job_runs(service: Service, tiny_model: Path) -> None:
    before = _scrape(service)
    job = service.submit(job_spec(tiny_model, metadata={"suite": "prometheus"}))
    assert service.wait_finished(job["id"])["status"] == "succeeded"
    after = _scrape(service)
    assert after["grpo_jobs{status=succeeded}"] == before["grpo_jobs{status=succeeded}"] + 1
    assert after["grpo_metric_points_ingested_total"] >= before["grpo_metric_points_ingested_total"] + 8
    assert after["grpo_submit_to_running_seconds_count"] == before["grpo_submit_to_running_seconds_count"] + 1
    assert after["grpo_submit_to_running_seconds_bucket{le=+Inf}"] == after["grpo_submit_to_running_seconds_count"]
    assert after["grpo_workers_alive"] == 1
    assert after["grpo_queue_depth"] == after["grpo_jobs{status=queued}"]

    workers = service.http.get("/v1/workers").json()["data"]
    assert [w["alive"] for w in workers] == [True] and workers[0]["current_job"] is None

    # The job list filters by the labels it was submitted with.
    labelled = service.http.get("/v1/jobs", params={"metadata": "suite=prometheus"}).json()["data"]
    assert [j["id"] for j in labelled] == [job["id"]] and labelled[0]["metadata"] == {"suite": "prometheus"}
    assert service.http.get("/v1/jobs", params={"metadata": "suite"}).status_code == 422


def test_trls_own_report_to_writes_tensorboard_logs_beside_the_services_recording(
    service: Service, tiny_model: Path
) -> None:
    spec = job_spec(tiny_model)
    spec["args"]["report_to"] = ["tensorboard"]
    job = service.submit(spec)
    assert service.wait_finished(job["id"])["status"] == "succeeded", service.logs()
    event_files = list(Path(service.env["GRPO_DATA_DIR"], "jobs", job["id"]).rglob("events.out.tfevents.*"))
    assert event_files, "TRL's TensorBoard callback wrote no event file"
    written = b"".join(path.read_bytes() for path in event_files)
    assert b"train/reward" in written and b"train/kl" in written
    assert [p["step"] for p in service.all_metrics(job["id"])] == list(range(1, 9))


TERMINAL_ENV = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}


def watch_in_a_terminal(service: Service, job_id: str) -> pexpect.spawn:
    """`grpo watch JOB_ID` under a pseudo-terminal of 40 x 120."""
    return pexpect.spawn(
        sys.executable,
        ["-m", "cli.main", "watch", job_id, "--url", service.url],
        env={**TERMINAL_ENV, "GRPO_API_KEY": service.key or ""},
        timeout=180,
        dimensions=(40, 120),
        encoding="utf-8",
    )


def grpo_in_a_terminal(service: Service, *arguments: str) -> str:
    return str(
        pexpect.run(
            f"{sys.executable} -m cli.main {' '.join(arguments)} --url {service.url}",
            env={**TERMINAL_ENV, "GRPO_API_KEY": service.key or ""},
            encoding="utf-8",
        )
    )


def test_grpo_watch_in_a_terminal_shows_progress_and_exits_with_the_jobs_end(
    service: Service, tiny_model: Path
) -> None:
    job = service.submit(slow_job(tiny_model, steps=16, metadata={"suite": "terminal"}))
    watch = watch_in_a_terminal(service, job["id"])
    watch.expect("ETA")  # the live view's progress bar
    watch.expect("reward")
    watch.expect(pexpect.EOF)
    watch.close()
    output = watch.before or ""
    assert watch.exitstatus == 0, output
    assert "16/16" in output  # the progress bar reached the job's last step
    assert any(block in output for block in "▁▂▃▄▅▆▇█")  # the reward sparkline
    assert "newest sample" in output
    assert f"job {job['id']} succeeded" in output

    # A cancelled job's watch exits 3.
    cancelled = service.submit(slow_job(tiny_model, steps=2000))
    service.wait_until(cancelled["id"], lambda j: j["status"] == "running")
    service.http.post(f"/v1/jobs/{cancelled['id']}/cancel")
    watched = watch_in_a_terminal(service, cancelled["id"])
    watched.expect(pexpect.EOF)
    watched.close()
    assert watched.exitstatus == 3

    listing = grpo_in_a_terminal(service, "jobs", "--metadata", "suite=terminal")
    assert job["id"] in listing and "succeeded" in listing and cancelled["id"] not in listing
    timeline = grpo_in_a_terminal(service, "events", job["id"])
    assert "job queued" in timeline and "reward sandbox started" in timeline and "succeeded" in timeline
