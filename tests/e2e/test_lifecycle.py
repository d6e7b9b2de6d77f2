"""Jobs survive faults and obey users: cancel, pause and resume, a killed or stopped worker, a broker that loses
its messages, a job delivered twice, a training step that never ends. Real Postgres, Redis and worker processes
(leases of 3 s, see FAST_LIFECYCLE in conftest)."""

from __future__ import annotations

import io
import signal
import socket
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis
from sqlalchemy import make_url, select

from shared.queue import make_celery, send_run_job
from shared.settings import Settings
from shared.spec.job import JobSpec
from shared.store.db import Database
from shared.store.models import Checkpoint, Job, JobEvent, MetricPoint
from tests.processes import GrpoProcess, Service, base_env
from tests.services import libpq_url
from tests.specs import job_spec, python_reward
from tests.store import new_job

# About 7 steps a second: slow enough to act on a job mid-run, fast enough for a test. It runs in the job's reward
# sandbox (a grandchild of the worker) and logs that process's pid as the metric `sandbox_pid`: each attempt starts
# a sandbox of its own, so the metric says which attempt wrote a point.
SLOW_REWARD = python_reward(
    "import os\n"
    "import time\n\n"
    "def slow_length(completions, **kwargs):\n"
    "    time.sleep(0.1)\n"
    "    kwargs['log_metric']('sandbox_pid', os.getpid())\n"
    "    return [-abs(10 - len(c)) for c in completions]\n"
)
SANDBOX_PROGRAM = "sandbox.server"


def slow_job(model: Path, steps: int, save_steps: int = 1000) -> dict[str, Any]:
    spec = job_spec(model, reward_funcs=[SLOW_REWARD])
    spec["args"].update(max_steps=steps, save_steps=save_steps)
    return spec


def training_pids(service: Service, job_id: str) -> list[int]:
    return [e["data"]["pid"] for e in service.events(job_id) if e["message"].startswith("training process")]


def event_messages(service: Service, job_id: str) -> list[str]:
    return [e["message"] for e in service.events(job_id)]


def wait_for_event(service: Service, job_id: str, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in m for m in event_messages(service, job_id)):
        assert time.monotonic() < deadline, f"no event {text!r}: {event_messages(service, job_id)}"
        time.sleep(0.1)


def steps_of(service: Service, job_id: str) -> list[int]:
    return [p["step"] for p in service.all_metrics(job_id, page_size=100)]


def worker_process(service: Service, name: str = "worker.log") -> psutil.Process:
    return psutil.Process(next(p for p in service.processes if p.log_path.name == name).process.pid)


def worker_named(service: Service, name: str) -> GrpoProcess:
    """The worker process a job's `worker` field names (`grpo-worker-<pid>@<host>`)."""
    return next(p for p in service.processes if name.startswith(f"grpo-worker-{p.process.pid}@"))


def gone(process: psutil.Process) -> bool:
    """Whether the process has ended (a zombie waiting for its parent to reap it has: it holds no memory or GPU)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def survivors(processes: list[psutil.Process], deadline: float) -> list[psutil.Process]:
    """The processes still running at `deadline` (time.monotonic()); returns as soon as all are gone."""
    while (running := [p for p in processes if not gone(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return running


def is_sandbox(process: psutil.Process) -> bool:
    return SANDBOX_PROGRAM in process.cmdline()


def checkpoint_steps(service: Service, job_id: str) -> list[int]:
    listed = service.http.get(f"/v1/jobs/{job_id}/checkpoints").json()["data"]
    return [c["step"] for c in listed if c["name"] != "final"]


def open_transactions(processes: list[psutil.Process], postgres_url: str) -> list[tuple[int, str]]:
    """The Postgres sessions of `processes` that are inside a transaction (their client port, and state)."""
    server = make_url(postgres_url)
    ports = [
        c.laddr.port
        for p in processes
        for c in p.net_connections(kind="tcp")
        if c.raddr and c.raddr.port == (server.port or 5432)
    ]
    with psycopg.connect(libpq_url(postgres_url)) as connection:
        rows = connection.execute(
            "SELECT client_port, state FROM pg_stat_activity WHERE client_port = ANY(%s) AND state <> 'idle'",
            [ports],
        ).fetchall()
    return [(int(port), str(state)) for port, state in rows]


def freeze_between_transactions(processes: list[psutil.Process], postgres_url: str) -> None:
    """SIGSTOP the processes at a moment when none of them is inside a database transaction.

    A process frozen inside one keeps its row locks until it wakes, and the sweep's takeover waits for them (the
    service sets no `idle_in_transaction_session_timeout` or `lock_timeout`): a limit of its own, not the fencing
    this test is about. Frozen between two transactions, the processes are as a machine paused between writes.
    """
    for _ in range(200):
        for process in processes:
            process.suspend()
        if not open_transactions(processes, postgres_url):
            return
        for process in reversed(processes):
            process.resume()
        time.sleep(0.01)
    raise AssertionError("the processes were always inside a transaction")


@contextmanager
def database_at(url: str) -> Iterator[Database]:
    """The service's own database, to check what was written in it (not what a log or the API says)."""
    database = Database(url)
    try:
        yield database
    finally:
        database.dispose()


def test_cancel_ends_a_running_job_within_5_seconds_and_a_queued_one_at_once(
    production_service: Service, tiny_model: Path
) -> None:
    service = production_service
    running = service.submit(slow_job(tiny_model, steps=100_000))
    waiting = service.submit(job_spec(tiny_model))  # queued behind it
    service.wait_until(running["id"], lambda j: (j["latest_step"] or 0) >= 2)
    (pid,) = training_pids(service, running["id"])
    child = psutil.Process(pid)
    descendants = child.children(recursive=True)
    assert [p for p in descendants if is_sandbox(p)], f"no reward sandbox under the training process: {descendants}"

    queued_cancel = service.http.post(f"/v1/jobs/{waiting['id']}/cancel")
    assert queued_cancel.status_code == 200 and queued_cancel.json()["status"] == "cancelled"
    asked = time.monotonic()
    response = service.http.post(f"/v1/jobs/{running['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    # The training process and everything it started (the reward sandbox), each checked by pid.
    assert survivors([child, *descendants], deadline=asked + 5) == []

    wait_for_event(service, running["id"], "training process of attempt 1 ended: job cancelled")
    never_ran = service.job(waiting["id"])
    assert (never_ran["status"], never_ran["attempt"], never_ran["started_at"]) == ("cancelled", 0, None)
    again = service.http.post(f"/v1/jobs/{running['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["message"] == f"job {running['id']} is already cancelled: there is nothing to cancel"
    # The worker is free for the next job.
    assert service.wait_finished(service.submit(job_spec(tiny_model))["id"])["status"] == "succeeded"


def test_a_killed_worker_is_replaced_and_the_job_resumes_from_its_checkpoint(
    production_service: Service, tiny_model: Path
) -> None:
    service = production_service
    job = service.submit(slow_job(tiny_model, steps=40, save_steps=10))
    service.wait_until(job["id"], lambda j: (j["latest_step"] or 0) >= 12)
    assert [c["name"] for c in service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]][:1] == [
        "checkpoint-10"
    ]
    lost = worker_process(service)
    descendants = lost.children(recursive=True)
    (pid,) = training_pids(service, job["id"])
    child = next(p for p in descendants if p.pid == pid)
    assert [p for p in child.children() if is_sandbox(p)], f"no reward sandbox under the training process: {child}"
    lost.send_signal(signal.SIGKILL)
    lost.wait(timeout=10)
    killed = time.monotonic()
    # Nothing the worker started outlives it: not the training process (it would hold the GPU), not its reward
    # sandbox, not the forkserver.
    assert survivors(descendants, deadline=killed + 5) == []
    service.start_worker("worker-2")

    final = service.wait_finished(job["id"], timeout=120)
    assert final["status"] == "succeeded", final["error"]
    assert (final["attempt"], final["lost_attempts"]) == (2, 1)
    assert steps_of(service, job["id"]) == list(range(1, 41))  # every step once, after the resume too
    messages = event_messages(service, job["id"])
    assert any("the lease of attempt 1" in m and "expired (worker lost): requeued" in m for m in messages)
    resumed = [m for m in messages if m.startswith("attempt 2 resumes from checkpoint-")]
    assert resumed and int(resumed[0].split("checkpoint-")[1].split()[0]) >= 10


def test_a_stopped_worker_saves_a_checkpoint_and_another_worker_finishes_the_job(
    production_service: Service, tiny_model: Path
) -> None:
    service = production_service
    # The second worker is ready before the job starts: started after, on a busy machine it could take longer to
    # come up than the first takes to finish the whole job, and nothing would be handed over.
    service.start_worker("worker-2")
    job = service.submit(slow_job(tiny_model, steps=40))  # no periodic checkpoint: the stop makes one
    running = service.wait_until(job["id"], lambda j: (j["latest_step"] or 0) >= 3)
    first = worker_named(service, running["worker"])
    first.process.send_signal(signal.SIGTERM)  # a `docker compose` scale-down
    assert first.process.wait(timeout=30) == 0

    final = service.wait_finished(job["id"], timeout=120)
    assert final["status"] == "succeeded", final["error"]
    assert (final["attempt"], final["lost_attempts"]) == (2, 0)
    assert final["worker"] != running["worker"] and "worker-" in final["worker"]
    assert steps_of(service, job["id"]) == list(range(1, 41))
    messages = event_messages(service, job["id"])
    handed_back = [m for m in messages if "stopping: job handed back at step" in m]
    assert handed_back and "(checkpoint saved)" in handed_back[0]
    step = int(handed_back[0].split("at step ")[1].split()[0])
    assert f"attempt 2 resumes from checkpoint-{step} (saved by attempt 1)" in " ".join(messages)


def test_a_paused_job_frees_its_worker_and_resumes_from_its_checkpoint(
    production_service: Service, tiny_model: Path
) -> None:
    service = production_service
    job = service.submit(slow_job(tiny_model, steps=30))
    service.wait_until(job["id"], lambda j: (j["latest_step"] or 0) >= 3)
    asked = service.http.post(f"/v1/jobs/{job['id']}/pause").json()
    assert (asked["status"], asked["requested_action"]) == ("running", "pause")
    paused = service.wait_until(job["id"], lambda j: j["status"] == "paused", timeout=30)
    assert paused["requested_action"] is None
    paused_at = [m for m in event_messages(service, job["id"]) if m.startswith("job paused at step")]
    step = int(paused_at[0].split("at step ")[1].split()[0])
    assert f"checkpoint-{step}" in [
        c["name"] for c in service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    ]

    # The worker is free while the job is paused.
    other = service.wait_finished(service.submit(job_spec(tiny_model))["id"])
    assert other["status"] == "succeeded" and service.job(job["id"])["status"] == "paused"
    assert service.http.post(f"/v1/jobs/{job['id']}/pause").status_code == 409

    assert service.http.post(f"/v1/jobs/{job['id']}/resume").json()["status"] in ("queued", "running")
    final = service.wait_finished(job["id"], timeout=120)
    assert final["status"] == "succeeded" and final["attempt"] == 2
    assert steps_of(service, job["id"]) == list(range(1, 31))
    # It continued from the pause's checkpoint, not from the start.
    assert step > 0 and final["resumed_from_step"] == step
    assert f"attempt 2 resumes from checkpoint-{step} (saved by attempt 1)" in " ".join(
        event_messages(service, job["id"])
    )
    assert service.http.post(f"/v1/jobs/{job['id']}/resume").status_code == 409


def test_queued_jobs_still_run_when_redis_loses_its_messages(
    production_service: Service, tiny_model: Path, redis_server: str
) -> None:
    service = production_service
    busy = service.submit(slow_job(tiny_model, steps=20))
    service.wait_until(busy["id"], lambda j: j["status"] == "running")
    waiting = [service.submit(job_spec(tiny_model))["id"] for _ in range(3)]
    redis.Redis.from_url(redis_server).flushall()  # the queued messages are gone

    for job_id in [busy["id"], *waiting]:
        assert service.wait_finished(job_id, timeout=120)["status"] == "succeeded"
    for job_id in waiting:
        assert "message sent again: the broker had lost it" in event_messages(service, job_id)


def test_a_job_delivered_twice_at_once_to_two_idle_workers_is_claimed_once(
    two_workers: Service, tiny_model: Path, postgres_url: str
) -> None:
    service = two_workers  # both workers wait on the queue, idle
    settings = Settings(
        broker_url=service.env["GRPO_BROKER_URL"],
        queue=service.env["GRPO_QUEUE"],
        data_dir=Path(service.env["GRPO_DATA_DIR"]),
    )
    celery = make_celery(settings)
    with database_at(postgres_url) as database:
        job_id = new_job(database, JobSpec.model_validate(job_spec(tiny_model)))  # queued, no message sent yet
        # Two deliveries of the same job, back to back: each idle worker takes one (a worker holds one message
        # at a time), and both try to claim the job at once.
        send_run_job(celery, settings, job_id)
        send_run_job(celery, settings, job_id)

        final = service.wait_finished(job_id)
        assert (final["status"], final["attempt"]) == ("succeeded", 1), final["error"]
        winner = worker_named(service, final["worker"])
        (loser,) = [p for p in service.processes if p.log_path.name.startswith("worker") and p is not winner]
        # The other delivery did reach the other worker, which found the job claimed and left it alone.
        loser.wait_for_log(f"job {job_id} is ", timeout=30)
        assert "not queued: nothing to do" in loser.log() and f"job {job_id} claimed" not in loser.log()

        # The database holds one claim, and nothing from the worker that lost the race.
        with database.session() as session:
            job = session.get(Job, job_id)
            assert job is not None
            assert (job.status, job.attempt, job.lost_attempts, job.latest_step) == ("succeeded", 1, 0, 8)
            events = list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))
        statuses = [(e.data or {})["status"] for e in events if e.kind == "status"]
        assert statuses == ["queued", "running", "succeeded"]
        running = next(e for e in events if e.kind == "status" and (e.data or {})["status"] == "running")
        assert running.data == {"status": "running", "worker": final["worker"], "attempt": 1}
        assert len([e for e in events if e.message.startswith("training process")]) == 1
        loser_name = f"grpo-worker-{loser.process.pid}@"
        assert not [e.message for e in events if loser_name in e.message or loser_name in str(e.data)]


def writes_of_a_stale_claim(database: Database, job_id: str, stale_sandbox_pid: int) -> dict[str, list[Any]]:
    """What attempt 1 wrote after the sweep took its job away (all of it should have been refused).

    Metric points tell their attempt by `sandbox_pid` (see SLOW_REWARD), checkpoints by their `attempt`, events by
    what they say.
    """
    with database.session() as session:
        events = list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))
        (takeover,) = [e for e in events if e.message.startswith("the lease of attempt 1 on ")]
        checkpoints = session.scalars(
            select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.created_at >= takeover.created_at)
        )
        points = session.scalars(
            select(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.logged_at >= takeover.created_at)
        )
        return {
            "metric steps": [p.step for p in points if p.metrics.get("sandbox_pid") == stale_sandbox_pid],
            "checkpoints": [c.name for c in checkpoints if c.attempt == 1],
            "events": [
                e.message
                for e in events
                if e.id > takeover.id
                and (e.kind == "error" or "attempt 1" in e.message.replace("(saved by attempt 1)", ""))
            ],
        }


def test_a_paused_worker_whose_job_was_taken_over_writes_nothing_when_it_wakes(
    production_service: Service, tiny_model: Path, postgres_url: str
) -> None:
    # A worker machine that freezes (a VM paused, a long GC, a partition) and comes back after its lease expired:
    # the worker that took the job over finishes it, and the stale claim's late writes are all refused.
    service = production_service
    service.start_worker("worker-2")
    job = service.submit(slow_job(tiny_model, steps=80, save_steps=5))
    deadline = time.monotonic() + 60
    while not checkpoint_steps(service, job["id"]):  # freeze it right after its first checkpoint
        assert time.monotonic() < deadline, f"no checkpoint within 60 s\n{service.logs()}"
        time.sleep(0.02)
    first = worker_named(service, service.job(job["id"])["worker"])
    (second,) = [p for p in service.processes if p.log_path.name.startswith("worker") and p is not first]
    (pid,) = training_pids(service, job["id"])
    child = psutil.Process(pid)
    (stale_sandbox,) = [p for p in child.children() if is_sandbox(p)]
    freeze_between_transactions([psutil.Process(first.process.pid), child, stale_sandbox], postgres_url)
    # What attempt 1 had stored when it froze (it can store nothing more).
    stopped_at = max([service.job(job["id"])["latest_step"], *checkpoint_steps(service, job["id"])])
    frozen_checkpoint = max(checkpoint_steps(service, job["id"]))

    # Its lease expires (3 s); the other worker's sweep requeues the job, claims it and trains past the step the
    # frozen one stopped at, so that any late write of the stale claim would overwrite the new claim's work.
    service.wait_until(
        job["id"],
        lambda j: j["attempt"] == 2 and j["status"] == "running" and (j["latest_step"] or 0) >= stopped_at + 5,
    )
    # The stale training process wakes first: it finishes its step, its writes are refused, and that ends it (its
    # worker, still frozen, cannot end it for it).
    for process in (child, stale_sandbox):
        process.resume()
    assert survivors([child], deadline=time.monotonic() + 60) == [], "the stale training process did not end"
    with database_at(postgres_url) as database:
        assert writes_of_a_stale_claim(database, job["id"], stale_sandbox.pid) == {
            "metric steps": [],
            "checkpoints": [],
            "events": [],
        }
    # Its writes met a job that was running, as attempt 2's: the attempt alone refused them.
    woke = service.job(job["id"])
    assert (woke["status"], woke["attempt"]) == ("running", 2), "the job ended before the stale claim woke"
    # Then its worker wakes, finds the job gone, and records nothing.
    first.process.send_signal(signal.SIGCONT)
    first.wait_for_log(f"job {job['id']}: attempt 1 no longer owns the job", timeout=30)

    final = service.wait_finished(job["id"], timeout=120)
    assert final["status"] == "succeeded", final["error"]
    assert steps_of(service, job["id"]) == list(range(1, 81))  # each step once, none lost
    with database_at(postgres_url) as database:
        assert writes_of_a_stale_claim(database, job["id"], stale_sandbox.pid) == {
            "metric steps": [],
            "checkpoints": [],
            "events": [],
        }
        with database.session() as session:
            row = session.get(Job, job["id"])
            assert row is not None
            statuses = session.scalars(
                select(JobEvent).where(JobEvent.job_id == job["id"], JobEvent.kind == "status").order_by(JobEvent.id)
            )
            transitions = [(e.data or {}).get("status") for e in statuses]
            points = list(session.scalars(select(MetricPoint).where(MetricPoint.job_id == job["id"])))
            checkpoints = list(session.scalars(select(Checkpoint).where(Checkpoint.job_id == job["id"])))
    assert (row.status, row.attempt, row.lost_attempts, row.latest_step) == ("succeeded", 2, 1, 80)
    assert row.worker == final["worker"] == f"grpo-worker-{second.process.pid}@{socket.gethostname()}"
    assert transitions == ["queued", "running", "queued", "running", "succeeded"]
    # Attempt 2 continued from the newest checkpoint attempt 1 had saved, and wrote every point past it.
    assert row.resumed_from_step == frozen_checkpoint
    assert f"attempt 2 resumes from checkpoint-{frozen_checkpoint} (saved by attempt 1)" in [
        m.split(";")[0] for m in event_messages(service, job["id"])
    ]
    by_step = {p.step: int(p.metrics["sandbox_pid"]) for p in points}
    assert {by_step[s] for s in range(1, frozen_checkpoint + 1)} == {stale_sandbox.pid}
    fresh = {by_step[s] for s in range(frozen_checkpoint + 1, 81)}
    assert len(fresh) == 1 and stale_sandbox.pid not in fresh
    assert {c.name: c.attempt for c in checkpoints}["final"] == 2

    # The worker that froze lives on, and runs the next job (the other worker is gone, so it must be this one).
    assert first.alive()
    second.stop()
    next_job = service.wait_finished(service.submit(job_spec(tiny_model))["id"])
    assert (next_job["status"], next_job["worker"]) == (
        "succeeded",
        f"grpo-worker-{first.process.pid}@{socket.gethostname()}",
    )


def test_a_reward_that_never_returns_trips_the_stall_watchdog(tmp_path: Path, tiny_model: Path) -> None:
    # The reward's own time limit (the sandbox's) is set past the stall limit, so that the watchdog acts first.
    env = base_env(tmp_path / "data", stall_seconds="4", heartbeat_seconds="0.5", reward_timeout_seconds="600")
    service = Service(env, tmp_path)
    try:
        service.start_api("up")
        forever = python_reward("import time\n\ndef forever(completions, **kwargs):\n    time.sleep(10**6)\n")
        stuck = service.submit(job_spec(tiny_model, reward_funcs=[forever]))
        final = service.wait_finished(stuck["id"], timeout=60)
        assert final["status"] == "failed"
        assert final["error"].startswith("stalled: no training progress for 4 s (at step 0); stuck in ")
        assert "_receive (client.py:" in final["error"] and " <- forever (rewards.py:" in final["error"]
        # The worker lives on.
        assert service.wait_finished(service.submit(job_spec(tiny_model))["id"])["status"] == "succeeded"
    finally:
        service.stop()


def test_checkpoints_and_the_final_model_download_as_tar_archives(embedded_service: Service, tiny_model: Path) -> None:
    service = embedded_service
    spec = job_spec(tiny_model)
    spec["args"].update(save_steps=4)
    job = service.wait_finished(service.submit(spec)["id"])
    listed = service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert [(c["name"], c["step"]) for c in listed] == [("checkpoint-4", 4), ("checkpoint-8", 8), ("final", 8)]
    assert listed[0]["metrics"]["reward"] == service.all_metrics(job["id"])[3]["metrics"]["reward"]

    for name, expected in (("final", "model.safetensors"), ("4", "trainer_state.json")):
        response = service.http.get(f"/v1/jobs/{job['id']}/checkpoints/{name}/download")
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-tar"
        with tarfile.open(fileobj=io.BytesIO(response.content)) as archive:
            names = archive.getnames()
        folder = f"{job['id']}-{'final' if name == 'final' else 'checkpoint-' + name}"
        assert f"{folder}/{expected}" in names and f"{folder}/config.json" in names
    assert service.http.get(f"/v1/jobs/{job['id']}/checkpoints/99/download").status_code == 404
    assert service.http.get("/v1/jobs/job-nope/checkpoints").status_code == 404


def test_the_service_keeps_only_save_total_limit_checkpoints(embedded_service: Service, tiny_model: Path) -> None:
    spec = job_spec(tiny_model)
    spec["args"].update(save_steps=2, save_total_limit=1)
    job = embedded_service.wait_finished(embedded_service.submit(spec)["id"])
    listed = embedded_service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert [c["name"] for c in listed] == ["checkpoint-8", "final"]
    attempt_dir = Path(embedded_service.env["GRPO_DATA_DIR"]) / "jobs" / job["id"] / "attempt-1"
    assert [p.name for p in attempt_dir.glob("checkpoint-*")] == ["checkpoint-8"]


def test_a_job_without_save_steps_checkpoints_every_default_save_steps(tmp_path: Path, tiny_model: Path) -> None:
    service = Service(base_env(tmp_path / "data", default_save_steps="5"), tmp_path)
    try:
        service.start_api("up")
        spec = job_spec(tiny_model)
        spec["args"].update(max_steps=12)
        defaulted = service.wait_finished(service.submit(spec)["id"])
        own = job_spec(tiny_model)
        own["args"].update(max_steps=12, save_steps=4)  # a spec's own save_steps wins over the default
        chosen = service.wait_finished(service.submit(own)["id"])

        # The trainer also saves at the last step, whatever save_steps says.
        for job, steps in ((defaulted, [5, 10, 12]), (chosen, [4, 8, 12])):
            assert job["status"] == "succeeded", job["error"]
            listed = service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
            assert [c["name"] for c in listed] == [f"checkpoint-{s}" for s in steps] + ["final"]
            attempt_dir = Path(service.env["GRPO_DATA_DIR"]) / "jobs" / job["id"] / "attempt-1"
            assert sorted(p.name for p in attempt_dir.glob("checkpoint-*")) == sorted(f"checkpoint-{s}" for s in steps)
    finally:
        service.stop()
