"""Running users' Python reward functions in a sandbox process (see `sandbox_server.py` for what it forbids).

One sandbox serves all the Python rewards of one job (or one preview request). The trainer side sends each call
as a JSON line and waits at most `timeout` seconds for the answer; a call that runs longer kills the sandbox, and a
sandbox that died is started again for the next call. Data crosses as JSON only: nothing the sandbox sends is
ever unpickled.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sandbox.confinement import Confinement
from shared.spec.rewards import BuiltinReward, PythonReward

# The largest answer the trainer reads from the sandbox (rewards with what they log; a tool's result is cut far
# below this inside the sandbox).
MAX_ANSWER_BYTES = 64 * 2**20
# Seconds a new sandbox gets to start and compile the sources (imports such as sympy take a moment).
START_SECONDS = 60.0


@dataclass
class SandboxLimits:
    """Per call wall-clock time and the sandbox's memory (defaults like hosted graders': 2 min, 2 GB)."""

    timeout_seconds: float = 120.0
    memory_mb: int = 2048
    timeout_setting: str = "GRPO_REWARD_TIMEOUT_SECONDS"
    # Refuse to run reward code where the kernel cannot confine it (no Landlock or seccomp).
    require_kernel: bool = False


class RewardCallFailed(RuntimeError):
    """A Python reward function raised, ran too long, or the sandbox died; the message says which and why."""

    def __init__(self, message: str, traceback: str | None = None) -> None:
        super().__init__(message)
        self.traceback = traceback


class BadRewards(RewardCallFailed):
    """The function returned something that is not one number per completion (never scored as zero)."""


@dataclass
class CallResult:
    rewards: list[float | None]
    metrics: list[tuple[str, float]] = field(default_factory=list)
    extras: list[tuple[str, list[Any]]] = field(default_factory=list)


def _clean_environment(scratch: Path) -> dict[str, str]:
    # Nothing of the service's environment (database URL, broker, tokens) reaches user code.
    return {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}


def sandbox_entry(spec: PythonReward | BuiltinReward, path: str) -> dict[str, Any]:
    """What the sandbox needs to host a reward: a Python source to compile, or a built-in to build.

    `path` is the reward's place in the request (`reward_funcs[2]`), which error messages name.
    """
    if isinstance(spec, PythonReward):
        return {"name": spec.reward_name, "path": path, "function": spec.function_name, "source": spec.source}
    return {"name": spec.reward_name, "path": path, "builtin": spec.model_dump(mode="json", by_alias=True)}


class Sandbox:
    """A sandbox process hosting the Python rewards of one job (or the rewards of one preview)."""

    def __init__(
        self,
        entries: list[dict[str, Any]],
        scratch: Path,
        limits: SandboxLimits,
        log: IO[Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        environments: list[dict[str, Any]] | None = None,
    ) -> None:
        """`entries` are `sandbox_entry`s; calls name a reward by its entry's `name`. `tools` and `environments`
        are the agent's (see worker/agents.py): tools are called by function name, environments made by name."""
        self.sources = entries
        self.tools = tools or []
        self.environments = environments or []
        # How many times the process was started: an environment handle lives only as long as its process.
        self.generation = 0
        self.scratch = scratch
        self.limits = limits
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._calls = 0
        # What the kernel enforces on the sandbox, once it has started.
        self.confinement: Confinement | None = None

    # --- the process ---

    def start(self) -> None:
        """Start the sandbox and compile the sources; raises RewardCallFailed when a source fails to load."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._buffer = b""
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-B", "-m", "sandbox.server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log if self.log is not None else subprocess.DEVNULL,
            cwd=self.scratch,
            env=_clean_environment(self.scratch),
        )
        # The server finds its module through the installed package; `-I` ignores PYTHONPATH on purpose.
        self._send(
            {
                "scratch": str(self.scratch),
                "memory_mb": self.limits.memory_mb,
                "parent": os.getpid(),
                "sources": self.sources,
                "tools": self.tools,
                "environments": self.environments,
                "require_kernel": self.limits.require_kernel,
            }
        )
        self.generation += 1
        ready = self._receive(START_SECONDS, "starting the reward sandbox")
        if "confinement" in ready:
            self.confinement = Confinement(**ready["confinement"])
        if ready.get("error", {}).get("type") == "SandboxUnavailable":
            self.close()
            raise RewardCallFailed(
                f"the reward sandbox cannot be confined by this kernel ({ready['error']['message']}), and "
                "GRPO_REWARD_REQUIRE_KERNEL_SANDBOX is set: run the worker on Linux 5.13+ with Landlock enabled "
                "and libseccomp installed, or unset it"
            )
        if not ready.get("ready"):
            error = ready.get("error", {})
            self.close()
            raise RewardCallFailed(
                f"a reward failed to load: {error.get('type')}: {error.get('message')}{error.get('where', '')}",
                error.get("traceback"),
            )

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def close(self) -> None:
        """End the sandbox process."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._process = None

    # --- calls ---

    def call(self, name: str, kwargs: dict[str, Any]) -> CallResult:
        """Call reward `name` with TRL's keyword arguments (JSON-able ones); raises RewardCallFailed."""
        answer = self.request({"reward": name, "kwargs": kwargs}, f"reward function {name!r}")
        if "bad_result" in answer:
            raise BadRewards(f"reward function {name!r} {answer['bad_result']}")
        return CallResult(
            answer["rewards"],
            [(str(m[0]), float(m[1])) for m in answer["metrics"]],
            [(str(e[0]), list(e[1])) for e in answer["extras"]],
        )

    def request(self, message: dict[str, Any], what: str) -> dict[str, Any]:
        """Send a request (a reward call, or a `kind`: tool, env_new, env_call, stats), starting the sandbox first
        when it is not running; its answer. Raises RewardCallFailed when the code raised (the message names
        `what`), ran too long, or the sandbox died."""
        if not self.alive():
            self.start()
        self._calls += 1
        self._send({"id": self._calls, **message})
        answer = self._receive(self.limits.timeout_seconds, what)
        if "error" in answer:
            error = answer["error"]
            raise RewardCallFailed(
                f"{what} raised {error['type']}: {error['message']}{error['where']}", error["traceback"]
            )
        return answer

    def tool_result(self, message: dict[str, Any], what: str) -> Any:
        """A tool's (or an environment method's) result as TRL appends it to the conversation: text, or content
        blocks. Raises RewardCallFailed as `request` does."""
        answer = self.request(message, what)
        return answer["content"] if "content" in answer else answer["text"]

    def _send(self, message: dict[str, Any]) -> None:
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.write((json.dumps(message, default=str) + "\n").encode())
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            self._died("receiving a call")

    def _receive(self, timeout: float, what: str) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        deadline = time.monotonic() + timeout
        buffer = bytearray(self._buffer)
        searched = 0  # the bytes before this hold no newline: each chunk is searched once
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while (end := buffer.find(b"\n", searched)) < 0:
                searched = len(buffer)
                if len(buffer) > MAX_ANSWER_BYTES:
                    self.close()
                    raise RewardCallFailed(
                        f"{what} answered more than {MAX_ANSWER_BYTES // 2**20} MiB (the sandbox's limit per answer): "
                        "return less"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.close()
                    raise RewardCallFailed(
                        f"{what} did not return within {timeout:g} s (the sandbox's limit per call, "
                        f"{self.limits.timeout_setting})"
                    )
                if not selector.select(remaining):
                    continue
                chunk = os.read(stdout.fileno(), 1 << 20)
                if not chunk:
                    self._died(what)
                buffer += chunk
        line, self._buffer = bytes(buffer[:end]), bytes(buffer[end + 1 :])
        message: dict[str, Any] = json.loads(line)
        return message

    def _died(self, what: str) -> None:
        code = self._process.wait() if self._process is not None else None
        self.close()
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        raise RewardCallFailed(f"the reward sandbox died while {what} ({how}); its output is in the job's train.log")
