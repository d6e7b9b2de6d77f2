"""The vLLM generation server of a job, the three ways TRL offers vLLM:

- `use_vllm` with `vllm_mode="colocate"` (TRL's default mode): vLLM runs inside the trainer; nothing here.
- `vllm_mode="server"` with `resources.vllm_gpus`: the job's training process starts `trl vllm-serve` for the job's
  model on the GPUs the worker reserved for generation (`CUDA_VISIBLE_DEVICES`), on free ports (HTTP and the weight
  sync's `vllm_group_port`), waits for its health endpoint, and points the trainer at it (`vllm_server_base_url`,
  `vllm_group_port`). The server's output goes to the job's `train.log` line by line, and to its events in batches.
- `vllm_mode="server"` without: the server the spec names, or else the operator's (`GRPO_VLLM_SERVER_URL`), as is.

A started server runs under a *guard*: this module run as `python -m worker.vllm_server`, the leader of a process
group of its own that holds the server and everything the server starts. The guard ends the whole group when the
server exits, and when the training process is gone: it waits on a pipe whose only writer is the training process,
and the end of that pipe comes however the training process ends (it finished, the worker SIGKILLed its process
group on a cancel, which the server's group is not part of, or it ended itself because its worker died). So no
server outlives its job, even where the training process had no chance to stop it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import httpx

from shared.spec.resources import names_vllm_server, vllm_server_mode

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.spec.job import JobSpec

HOST = "127.0.0.1"
# What TRL's VLLMClient.check_server polls (`trl vllm-serve` runs vLLM's own OpenAI server since TRL 1.x).
HEALTH_PATH = "/health"
HEALTH_POLL_SECONDS = 0.5
# `trl vllm-serve`'s own default: the server has its GPUs to itself. (GRPOConfig's 0.3 is colocate's, where vLLM
# shares the GPU with training; a spec that sets vllm_gpu_memory_utilization still gets its value.)
SERVER_GPU_MEMORY_UTILIZATION = 0.9
# The server's lines reach the job's events at most this often, and at most this many per event (all of them
# reach train.log): a chatty server costs the database one row per interval, not one per line.
EVENT_INTERVAL_SECONDS = 2.0
EVENT_MAX_LINES = 200
MAX_LINE_CHARS = 500
# A failed start's error ends with the server's last lines, this many at most, in about this many characters.
TAIL_LINES = 20
ERROR_TAIL_CHARS = 1400
# A stopping server gets this long to shut down on SIGTERM before its whole process group is SIGKILLed.
STOP_GRACE_SECONDS = 10.0
LOG_PREFIX = "[vllm] "
GUARD = "[vllm server guard]"
# How the ranks of a multi-process job, started by the process that started the server, find it.
URL_ENV = "GRPO_JOB_VLLM_SERVER_URL"
GROUP_PORT_ENV = "GRPO_JOB_VLLM_GROUP_PORT"

# (kind, message, data) -> one event of the job.
EventSink = Callable[[str, str, dict[str, Any]], None]


class VllmServerFailed(RuntimeError):
    """The job's vLLM server could not start or did not become healthy; the message ends with its last lines."""


def serve_arguments(model: str, args: dict[str, Any], gpus: int, port: int) -> list[str]:
    """`trl vllm-serve`'s arguments (TRL's own flag names: `trl.scripts.vllm_serve.make_parser`) that serve the
    job's model on `gpus` GPUs at `HOST:port`, with the spec's vLLM settings where it has them."""
    arguments = [
        "--model",
        model,
        "--tensor_parallel_size",
        str(args.get("vllm_tensor_parallel_size") or gpus),
        "--gpu_memory_utilization",
        str(args.get("vllm_gpu_memory_utilization", SERVER_GPU_MEMORY_UTILIZATION)),
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    if args.get("vllm_max_model_length") is not None:
        arguments += ["--max_model_len", str(args["vllm_max_model_length"])]
    if args.get("vllm_model_impl") is not None:
        arguments += ["--vllm_model_impl", str(args["vllm_model_impl"])]
    if args.get("trust_remote_code"):
        arguments += ["--trust_remote_code", "true"]
    return arguments


def resolve_command(command: str) -> list[str]:
    """GRPO_VLLM_SERVE_COMMAND as an argument list, its program found beside the worker's Python (a virtualenv's
    `trl` is there, whether or not the virtualenv is on PATH), or else on PATH."""
    words = shlex.split(command)
    if not words:
        raise VllmServerFailed("GRPO_VLLM_SERVE_COMMAND is empty: leave it unset for `trl vllm-serve`")
    program = words[0]
    if os.sep not in program:
        search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
        found = shutil.which(program, path=search)
        if found is None:
            raise VllmServerFailed(
                f"{program!r} (GRPO_VLLM_SERVE_COMMAND {command!r}) is neither beside the worker's Python nor on "
                "PATH: install TRL with vLLM on the worker (`pip install 'trl[vllm]'`)"
            )
        program = found
    return [program, *words[1:]]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on every address of this machine right now."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def start_for_job(
    spec: JobSpec, gpus: list[str], settings: Settings, log: TextIO, events: EventSink | None = None
) -> VllmServer | None:
    """Start the job's vLLM server on the worker's `gpus` (the ones `gpu_plan` reserved for vLLM), when the job asks
    for one (`vllm_mode` "server" with `resources.vllm_gpus`); None when it does not."""
    if not (vllm_server_mode(spec.args) and spec.resources.vllm_gpus):
        return None
    port, free_group_port = free_ports(2)
    command = [*resolve_command(settings.vllm_serve_command), *serve_arguments(spec.model, spec.args, len(gpus), port)]
    group_port = int(spec.args.get("vllm_group_port") or free_group_port)
    server = VllmServer(command, port=port, group_port=group_port, gpus=gpus, log=log, events=events)
    # Where trainer_arguments finds it, in this process and in the ranks a multi-process job launches from here.
    os.environ.update({URL_ENV: server.base_url, GROUP_PORT_ENV: str(server.group_port)})
    return server


def trainer_arguments(args: dict[str, Any], operator_url: str | None) -> dict[str, Any]:
    """The GRPOConfig fields that point a server-mode trainer at its vLLM server: the one started for the job (by
    this process, or by the one that launched this rank), or else the operator's where the spec names none.
    Colocate mode and a spec that names its server are left as they are."""
    if not vllm_server_mode(args):
        return {}
    if os.environ.get(URL_ENV):
        return {"vllm_server_base_url": os.environ[URL_ENV], "vllm_group_port": int(os.environ[GROUP_PORT_ENV])}
    if operator_url and not names_vllm_server(args):
        return {"vllm_server_base_url": operator_url}
    return {}


class VllmServer:
    """One vLLM server process group under its guard, started at once; then `wait_until_healthy`, then `stop`."""

    def __init__(
        self,
        command: list[str],
        *,
        port: int,
        group_port: int,
        gpus: list[str],
        log: TextIO,
        events: EventSink | None = None,
    ) -> None:
        self.command = command
        self.port = port
        self.group_port = group_port
        self.base_url = f"http://{HOST}:{port}"
        self._log = log
        self._events = events
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._pending: list[str] = []
        self._left_out = 0
        self._stopped = False
        visible = ",".join(str(index) for index in gpus)
        watch_read, self._watch_write = os.pipe()
        try:
            self._guard = subprocess.Popen(
                [sys.executable, "-m", "worker.vllm_server", "--watch-fd", str(watch_read), "--", *command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, "CUDA_VISIBLE_DEVICES": visible},
                pass_fds=(watch_read,),
                start_new_session=True,
            )
        except BaseException:
            os.close(self._watch_write)
            raise
        finally:
            os.close(watch_read)
        self.pgid = self._guard.pid  # the guard leads the server's process group
        self._reader = threading.Thread(target=self._read_output, name="vllm-server-output", daemon=True)
        self._reader.start()
        self._event(
            "info",
            f"vLLM server starting on GPU(s) {visible or 'none'} (process group {self.pgid}): {shlex.join(command)}",
            {"command": command, "gpus": gpus, "url": self.base_url, "group_port": group_port, "pgid": self.pgid},
        )

    def wait_until_healthy(self, timeout: float) -> None:
        """Return once the server answers its health endpoint; raise VllmServerFailed (and stop it) when it exits
        first or takes longer than `timeout` seconds."""
        started = time.monotonic()
        with httpx.Client(trust_env=False, timeout=5.0) as http:
            while True:
                if self._guard.poll() is not None:
                    self.stop()
                    raise VllmServerFailed(f"the vLLM server exited before it became healthy{self._last_lines()}")
                if self._healthy(http):
                    waited = time.monotonic() - started
                    self._event(
                        "info", f"vLLM server healthy at {self.base_url} after {waited:.1f} s", {"seconds": waited}
                    )
                    return
                if time.monotonic() - started >= timeout:
                    self.stop()
                    raise VllmServerFailed(
                        f"the vLLM server did not become healthy within {timeout:g} s "
                        f"(GRPO_VLLM_START_TIMEOUT_SECONDS){self._last_lines()}"
                    )
                time.sleep(HEALTH_POLL_SECONDS)

    def stop(self) -> None:
        """End the server and everything it started (its process group): SIGTERM, then SIGKILL after a grace."""
        if self._stopped:
            return
        self._stopped = True
        # A group whose guard has been reaped and whose output has ended is gone: its id may be reused.
        if self._guard.poll() is None or self._reader.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._guard.wait(timeout=STOP_GRACE_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)
            self._guard.wait()
        with contextlib.suppress(OSError):
            os.close(self._watch_write)
        self._reader.join(timeout=5)
        self._event("info", "vLLM server stopped", {"pgid": self.pgid})

    def _healthy(self, http: httpx.Client) -> bool:
        try:
            return http.get(self.base_url + HEALTH_PATH).status_code == 200
        except httpx.HTTPError:
            return False

    def _last_lines(self) -> str:
        """The end of the server's output, for an error a person reads (the whole of it is in train.log)."""
        self._reader.join(timeout=5)  # the group is gone: its output ends
        kept: list[str] = []
        size = 0
        for line in reversed(self._tail):
            size += len(line) + 3
            if kept and size > ERROR_TAIL_CHARS:
                break
            kept.append(line)
        if not kept:
            return "; it wrote nothing"
        return "; its last lines (all of them are in train.log):\n" + "\n".join(f"  {line}" for line in kept[::-1])

    # --- the server's output (a thread of its own) ---

    def _read_output(self) -> None:
        assert self._guard.stdout is not None
        descriptor = self._guard.stdout.fileno()
        partial = b""
        flush_at = time.monotonic() + EVENT_INTERVAL_SECONDS
        while True:
            ready, _, _ = select.select([descriptor], [], [], max(0.0, flush_at - time.monotonic()))
            if ready:
                chunk = os.read(descriptor, 65536)
                if not chunk:
                    break
                *lines, partial = (partial + chunk).split(b"\n")
                for line in lines:
                    self._take(line)
                if len(partial) > 65536:  # a progress bar that never ends its line
                    self._take(partial)
                    partial = b""
            if time.monotonic() >= flush_at:
                self._flush_events()
                flush_at = time.monotonic() + EVENT_INTERVAL_SECONDS
        if partial:
            self._take(partial)
        self._flush_events()

    def _take(self, raw: bytes) -> None:
        # A progress bar redraws itself with carriage returns: keep what it showed last.
        text = raw.decode(errors="replace").rstrip("\r").rsplit("\r", 1)[-1].rstrip()
        if not text:
            return
        text = text[:MAX_LINE_CHARS]
        with contextlib.suppress(OSError, ValueError):
            self._log.write(f"{LOG_PREFIX}{text}\n")
            self._log.flush()
        self._tail.append(text)
        if len(self._pending) < EVENT_MAX_LINES:
            self._pending.append(text)
        else:
            self._left_out += 1

    def _flush_events(self) -> None:
        if not self._pending:
            return
        lines, left_out = self._pending, self._left_out
        self._pending, self._left_out = [], 0
        message = "\n".join(lines)
        if left_out:
            message += f"\n... and {left_out} more line(s), in train.log"
        self._event("log", message, {"source": "vllm-serve", "lines": len(lines) + left_out})

    def _event(self, kind: str, message: str, data: dict[str, Any]) -> None:
        if self._events is None:
            return
        try:
            self._events(kind, message, data)
        except Exception as error:  # the database being away must not stop the server's output being read
            with contextlib.suppress(OSError, ValueError):
                self._log.write(f"{LOG_PREFIX}could not store an event: {type(error).__name__}: {error}\n")


# --- the guard (`python -m worker.vllm_server --watch-fd N -- COMMAND...`) ---


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _end_group_at_end_of_pipe(descriptor: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(descriptor, 4096):
            pass
    os.killpg(0, signal.SIGKILL)  # the training process is gone


def guard_main(argv: list[str] | None = None) -> None:
    """Run COMMAND in this process group (which this process leads) and end the whole group when COMMAND exits or
    the pipe `--watch-fd` reaches its end."""
    parser = argparse.ArgumentParser(prog="python -m worker.vllm_server", description=guard_main.__doc__)
    parser.add_argument("--watch-fd", type=int, required=True, help="read end of a pipe only the trainer writes to")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    # A graceful stop sends SIGTERM to the whole group: it is for the server; the guard stays to end what is left.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    # Watch first: a training process that is gone already ends the server as soon as it exists.
    threading.Thread(target=_end_group_at_end_of_pipe, args=(options.watch_fd,), daemon=True).start()
    try:
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    except OSError as error:
        print(f"{GUARD} could not start {shlex.join(command)}: {error}", flush=True)
        os.killpg(0, signal.SIGKILL)
        os._exit(127)  # not reached: the group's SIGKILL ends this process too
    code = server.wait()
    print(f"{GUARD} {shlex.join(command[:2])} ended: {_describe_exit(code)}", flush=True)
    os.killpg(0, signal.SIGKILL)  # whatever the server started and left behind, and this guard


if __name__ == "__main__":
    guard_main()
