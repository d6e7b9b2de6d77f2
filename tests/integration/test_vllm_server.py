"""The lifecycle of a job's vLLM server, run for real with a STAND-IN for vLLM: `tests/standins/vllm_stand_in.py`
is not vLLM (vLLM cannot be installed on this machine, which has no GPU). It parses the arguments the worker gives
`trl vllm-serve` with TRL's own parser, logs, starts a helper process and answers `GET /health`; the tests put it in
place of `trl vllm-serve` through the worker's own setting (GRPO_VLLM_SERVE_COMMAND). Everything else is the
service's real code: the guard, the process groups, the health wait, the log batching, the runner and the
training child. One test runs the real default command, `trl vllm-serve`, which gets as far as starting vLLM.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import select

from shared.settings import Settings
from shared.spec.job import JobSpec
from shared.store.db import Database, migrate
from shared.store.models import JobEvent
from shared.store.states import claim
from tests.specs import job_spec
from tests.store import new_job
from worker import runner, vllm_server
from worker.protocol import WorkerLink
from worker.training_process import TrainingProcess, start_forkserver
from worker.vllm_server import EVENT_INTERVAL_SECONDS, VllmServer, VllmServerFailed, start_for_job, trainer_arguments

STAND_IN = Path(__file__).resolve().parents[1] / "standins" / "vllm_stand_in.py"
VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None


def stand_in_command(mode: str, pids: Path, lines: int = 3, startup_seconds: float = 0.0) -> str:
    """GRPO_VLLM_SERVE_COMMAND that runs the stand-in in place of `trl vllm-serve`."""
    return shlex.join(
        [
            sys.executable,
            str(STAND_IN),
            "--stand-in-mode",
            mode,
            "--stand-in-pids",
            str(pids),
            "--stand-in-lines",
            str(lines),
            "--stand-in-startup-seconds",
            str(startup_seconds),
        ]
    )


def server_spec(model: str | Path = "m", gpus: int | None = None, vllm_gpus: int = 1) -> JobSpec:
    spec = job_spec(model, resources={"gpus": gpus, "vllm_gpus": vllm_gpus})
    spec["args"].update(use_vllm=True, vllm_mode="server")
    return JobSpec.model_validate(spec)


class Events:
    """The events a server reports (as the runner's sink stores them), from any thread."""

    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def add(self, kind: str, message: str, data: dict[str, Any]) -> None:
        with self._lock:
            self.recorded.append((kind, message, data))

    def of_kind(self, kind: str) -> list[str]:
        with self._lock:
            return [message for k, message, _ in self.recorded if k == kind]

    def log_lines(self) -> list[str]:
        return [line for message in self.of_kind("log") for line in message.splitlines()]


@pytest.fixture(autouse=True)
def no_job_server_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """start_for_job leaves the server's address in os.environ (for a multi-process job's ranks): undo it."""
    for name in (vllm_server.URL_ENV, vllm_server.GROUP_PORT_ENV):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def stand_in_processes(
    pids: Path, timeout: float = 30, outcome: Callable[[], Any] = lambda: None
) -> list[psutil.Process]:
    """The guard, the stand-in it started and the stand-in's helper, once the stand-in has written their pids."""
    deadline = time.monotonic() + timeout
    while not pids.exists() or not pids.read_text():
        assert time.monotonic() < deadline, "the stand-in did not start"
        assert outcome() is None, f"the training process ended first: {outcome()}"
        time.sleep(0.05)
    written = json.loads(pids.read_text())
    server = psutil.Process(written["server"])
    return [psutil.Process(server.ppid()), server, psutil.Process(written["helper"])]


def gone(process: psutil.Process) -> bool:
    """Ended (a zombie waiting to be reaped has: it holds no memory, GPU or port)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) == pgid and not gone(process):
                members.append(process)
    return members


def assert_all_gone(processes: list[psutil.Process], pgid: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (alive := [p for p in processes if not gone(p)] + group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive, f"still running: {alive}"


@pytest.fixture
def train_log(tmp_path: Path) -> Iterator[Any]:
    with (tmp_path / "train.log").open("a") as log:
        yield log


def test_a_stand_in_server_starts_gets_healthy_streams_its_log_in_batches_and_stops_leaving_no_process(
    tmp_path: Path, train_log: Any
) -> None:
    pids = tmp_path / "pids.json"
    settings = Settings(data_dir=tmp_path, vllm_serve_command=stand_in_command("healthy", pids, 300, 1.0))
    events = Events()
    spec = server_spec()
    started = time.monotonic()
    server = start_for_job(spec, ["1"], settings, train_log, events.add)
    assert isinstance(server, VllmServer)
    try:
        processes = stand_in_processes(pids)
        assert processes[0].pid == server.pgid and {os.getpgid(p.pid) for p in processes} == {server.pgid}
        assert server.pgid != os.getpgid(0)  # a group of its own, apart from the training process's
        server.wait_until_healthy(60)
        assert httpx.get(server.base_url + "/health", trust_env=False).status_code == 200
        assert server.group_port != server.port
        assert trainer_arguments(spec.args, "http://operator:8000") == {
            "vllm_server_base_url": server.base_url,
            "vllm_group_port": server.group_port,
        }
    finally:
        server.stop()
    elapsed = time.monotonic() - started
    assert_all_gone(processes, server.pgid)

    lines = events.log_lines()
    assert "INFO CUDA_VISIBLE_DEVICES=1" in lines  # the GPUs reserved for vLLM, not the trainer's
    assert any(
        "model=m tensor_parallel_size=1 gpu_memory_utilization=0.9" in line and f"port={server.port}" in line
        for line in lines
    )
    # 300 lines at once: one event carries 200 of them and says where the rest are; all of them are in train.log.
    assert any("... and" in m and "more line(s), in train.log" in m for m in events.of_kind("log"))
    assert len(events.of_kind("log")) <= 2 + elapsed / EVENT_INTERVAL_SECONDS
    train_log.flush()
    log_text = (tmp_path / "train.log").read_text()
    assert (
        "[vllm] INFO loading the model, step 300 of 300" in log_text and "[vllm] INFO:     Uvicorn running" in log_text
    )
    starting, healthy, stopped = events.of_kind("info")
    assert starting.startswith("vLLM server starting on GPU(s) 1") and "--model m" in starting
    assert healthy.startswith(f"vLLM server healthy at {server.base_url}") and stopped == "vLLM server stopped"


def test_a_stand_in_server_that_never_gets_healthy_fails_in_time_with_its_last_lines_and_leaves_no_process(
    tmp_path: Path, train_log: Any
) -> None:
    pids = tmp_path / "pids.json"
    settings = Settings(data_dir=tmp_path, vllm_serve_command=stand_in_command("never-healthy", pids))
    server = start_for_job(server_spec(), ["1"], settings, train_log, Events().add)
    assert server is not None
    processes = stand_in_processes(pids)
    started = time.monotonic()
    with pytest.raises(VllmServerFailed) as failure:
        server.wait_until_healthy(2.0)
    assert time.monotonic() - started < 2.0 + 15  # the time-out, and a grace to stop
    message = str(failure.value)
    assert message.startswith(
        "the vLLM server did not become healthy within 2 s (GRPO_VLLM_START_TIMEOUT_SECONDS); its last lines"
    )
    assert "  INFO still loading (this stand-in never becomes healthy)" in message
    assert len(message) < 2000  # a job's error is cut at 2000 characters
    assert_all_gone(processes, server.pgid)


def test_a_stand_in_server_that_exits_at_start_fails_with_its_output_and_its_helper_ends_too(
    tmp_path: Path, train_log: Any
) -> None:
    pids = tmp_path / "pids.json"
    settings = Settings(data_dir=tmp_path, vllm_serve_command=stand_in_command("exit", pids))
    server = start_for_job(server_spec(), ["1"], settings, train_log, Events().add)
    assert server is not None
    with pytest.raises(VllmServerFailed) as failure:
        server.wait_until_healthy(60)
    message = str(failure.value)
    assert message.startswith("the vLLM server exited before it became healthy; its last lines")
    assert "ERROR stand-in: ValueError: no GPU memory left for the KV cache" in message
    assert message.rstrip().endswith("ended: exit code 3")  # the guard's last word
    written = json.loads(pids.read_text())
    helper = psutil.Process(written["helper"]) if psutil.pid_exists(written["helper"]) else None
    assert helper is None or gone(helper)  # what the server started dies with it
    assert_all_gone([], server.pgid)


@pytest.mark.skipif(VLLM_INSTALLED, reason="with vLLM installed, the real server would start")
def test_the_default_command_is_trls_vllm_serve_which_takes_the_arguments_and_goes_on_to_start_vllm(
    tmp_path: Path, train_log: Any
) -> None:
    """No stand-in: `trl vllm-serve` itself parses the worker's arguments, translates them into `vllm serve`'s, and
    fails where vLLM would start, because vLLM is not installed here."""
    events = Events()
    server = start_for_job(
        server_spec("Qwen/Qwen2-0.5B-Instruct"), ["1"], Settings(data_dir=tmp_path), train_log, events.add
    )
    assert server is not None and server.command[1:2] == ["vllm-serve"]
    with pytest.raises(VllmServerFailed, match=r"exited before it became healthy(.|\n)*No module named 'vllm'"):
        server.wait_until_healthy(60)
    (translated,) = [line for line in events.log_lines() if "vllm serve Qwen/Qwen2-0.5B-Instruct" in line]
    assert f"--host 127.0.0.1 --port {server.port} --tensor-parallel-size 1" in translated
    assert "--gpu-memory-utilization 0.9" in translated and "--weight-transfer-config" in translated
    assert_all_gone([], server.pgid)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'grpo.sqlite'}"
    migrate(url)
    db = Database(url)
    yield db
    db.dispose()


def claimed_job(database: Database, spec: JobSpec) -> tuple[str, int]:
    job_id = new_job(database, spec)
    with database.session() as session:
        attempt = claim(session, job_id, "test-worker", 60.0)
    assert attempt is not None
    return job_id, attempt


def stored_events(database: Database, job_id: str) -> list[tuple[str, str]]:
    with database.session() as session:
        rows = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
        return [(event.kind, event.message) for event in rows]


@pytest.mark.parametrize("how", ["cancelled", "worker gone"])
def test_a_job_cancelled_or_orphaned_while_its_stand_in_server_starts_leaves_no_process(
    tmp_path: Path, database: Database, how: str
) -> None:
    """The real training child (forkserver, runner) starts the server; the worker ends the child as it does."""
    pids = tmp_path / "pids.json"
    settings = Settings(
        data_dir=tmp_path,
        database_url=database.url,
        vllm_serve_command=stand_in_command("never-healthy", pids),
    )
    job_id, attempt = claimed_job(database, server_spec(gpus=0))  # trains on the CPU; vLLM gets GPU 0
    start_forkserver()
    process = TrainingProcess(settings, job_id, attempt, worker_gpus=1)
    try:
        processes = stand_in_processes(pids, 90, lambda: process.wait(0))
        pgid = os.getpgid(processes[1].pid)
        assert process.pid is not None and pgid != os.getpgid(process.pid)  # out of reach of the child's group kill
        if how == "cancelled":
            process.kill()  # what the worker does on a cancel: SIGKILL to the child's process group
        else:
            process._connection.close()  # the worker is gone: the child's pipe from it ends
        assert_all_gone(processes, pgid)
    finally:
        process.kill()
    assert any(
        k == "info" and m.startswith("vLLM server starting on GPU(s) 0") for k, m in stored_events(database, job_id)
    )


@pytest.mark.skipif(VLLM_INSTALLED, reason="with vLLM installed, TRL would go on to sync weights with the stand-in")
def test_a_server_mode_job_builds_its_trainer_against_the_server_started_on_its_own_gpus(
    tmp_path: Path, database: Database, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runner.train, in this process: the stand-in starts on the GPU reserved for vLLM, the trainer is built
    pointing at it once it is healthy, TRL then stops where it needs vLLM itself, and the server is stopped."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # assign_gpus sets the trainer's; put back after the test
    pids = tmp_path / "pids.json"
    settings = Settings(data_dir=tmp_path, vllm_serve_command=stand_in_command("healthy", pids, startup_seconds=1.0))
    job_id, attempt = claimed_job(database, server_spec(tiny_model, gpus=1, vllm_gpus=1))
    seen: dict[str, Any] = {}
    real_trainer = runner.GRPOTrainer

    def trainer_watched(*args: Any, **kwargs: Any) -> Any:
        config = kwargs["args"]
        seen.update(
            url=config.vllm_server_base_url,
            group_port=config.vllm_group_port,
            health=httpx.get(f"{config.vllm_server_base_url}/health", trust_env=False).status_code,
            trainer_gpus=os.environ["CUDA_VISIBLE_DEVICES"],
            processes=stand_in_processes(pids),
        )
        return real_trainer(*args, **kwargs)

    monkeypatch.setattr(runner, "GRPOTrainer", trainer_watched)
    worker_end, child_end = Pipe()
    outcome = runner.train(settings, database, job_id, attempt, WorkerLink(child_end), worker_gpus=2)

    assert not outcome.succeeded and outcome.error is not None
    assert "vLLM is not available and `use_vllm` is set to True" in outcome.error  # TRL, past our server
    assert seen["health"] == 200 and seen["url"].startswith("http://127.0.0.1:")
    assert seen["group_port"] not in (51216, int(seen["url"].rsplit(":", 1)[1]))  # a free one, not TRL's default
    assert seen["trainer_gpus"] == "0"  # the plan: training on GPU 0, vLLM on GPU 1
    assert_all_gone(seen["processes"], seen["processes"][0].pid)
    messages = stored_events(database, job_id)
    log_lines = [line for kind, message in messages if kind == "log" for line in message.splitlines()]
    assert "INFO CUDA_VISIBLE_DEVICES=1" in log_lines
    infos = [message for kind, message in messages if kind == "info"]
    assert any(m.startswith("vLLM server starting on GPU(s) 1") for m in infos)
    assert any(m.startswith(f"vLLM server healthy at {seen['url']}") for m in infos) and "vLLM server stopped" in infos
    worker_end.close()
