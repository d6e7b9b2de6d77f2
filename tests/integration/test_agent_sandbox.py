"""Tools and environments in a real sandbox process, called through the trainer's stand-ins (worker/agents.py) as
TRL calls them: results come back, and a tool that raises, runs too long, or tries the network, a file outside its
scratch, a Unix socket or a process gets an error the model reads, while the sandbox keeps serving the next call."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.agent_sources import sandbox_environments, sandbox_tools
from sandbox.client import Sandbox, SandboxLimits
from shared.spec.job import JobSpec
from tests.specs import job_spec
from worker.agents import ToolFailed, build_environment_factory, build_tools, sandbox_counts
from worker.rewards import RewardFunctionError

HOSTILE = '''
import os, socket, subprocess, time

def echo(text: str) -> str:
    """Say it back.

    Args:
        text: What to say.
    """
    return text

def fails(text: str) -> str:
    """Raise.

    Args:
        text: The message.
    """
    raise ValueError(text)

def sleeps(seconds: float) -> str:
    """Sleep.

    Args:
        seconds: How long.
    """
    time.sleep(seconds)
    return "awake"

def connects(port: int) -> str:
    """Connect.

    Args:
        port: Where.
    """
    socket.create_connection(("127.0.0.1", port), timeout=2)
    return "connected"

def reads(path: str) -> str:
    """Read a file.

    Args:
        path: Which.
    """
    return open(path).read()[:20]

def unix(path: str) -> str:
    """Connect to a Unix socket.

    Args:
        path: Where.
    """
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return "connected"

def floods(size: int) -> str:
    """Answer a lot.

    Args:
        size: How many characters.
    """
    return "x" * size

def spawns(program: str) -> str:
    """Run a program.

    Args:
        program: Which.
    """
    return subprocess.run([program], capture_output=True, text=True).stdout
'''
COUNTER = '''
class Counter:
    def reset(self, **row):
        self.n = int(row.get("start", 0))
        return f" (start at {self.n})"

    def increment(self, by: int) -> str:
        """Add to the counter.

        Args:
            by: How much to add.
        """
        self.n += by
        return str(self.n)

    def wait(self, seconds: float) -> str:
        """Wait.

        Args:
            seconds: How long.
        """
        import time
        time.sleep(seconds)
        return "done"

    def get_reward(self) -> float:
        return float(self.n)
'''
BROKEN_RESET = """
class Broken:
    def reset(self, **row):
        return 1 / 0
"""


def _sandbox(tmp_path: Path, **fields: Any) -> tuple[JobSpec, Sandbox]:
    spec = JobSpec.model_validate({**job_spec("m"), **fields})
    sandbox = Sandbox(
        [], tmp_path / "scratch", SandboxLimits(1.5, 1024), None, sandbox_tools(spec), sandbox_environments(spec)
    )
    sandbox.start()
    return spec, sandbox


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[dict[str, Any], Sandbox]]:
    spec, sandbox = _sandbox(tmp_path, tools=[{"type": "python", "source": HOSTILE}])
    yield {tool.__name__: tool for tool in build_tools(sandbox, spec)}, sandbox
    sandbox.close()


def test_a_tool_answers_and_one_that_raises_tells_the_model_why(hostile: tuple[dict[str, Any], Sandbox]) -> None:
    tools, sandbox = hostile
    assert tools["echo"](text="hello") == "hello"
    with pytest.raises(ToolFailed) as failed:
        tools["fails"](text="no such city")
    assert str(failed.value).startswith("tool 'fails' raised ValueError: no such city (tools[0] line")
    with pytest.raises(ToolFailed, match="unexpected keyword argument 'nope'"):
        tools["echo"](text="x", nope="x")  # arguments the model made up
    with pytest.raises(ToolFailed, match="missing a required argument: 'text'"):
        tools["echo"]()
    assert tools["echo"](text="still here") == "still here"
    assert sandbox_counts(sandbox) == {"calls": {"echo": 2, "fails": 1}, "failures": {"fails": 1}}


def test_a_huge_result_is_cut_before_it_reaches_the_trainer(hostile: tuple[dict[str, Any], Sandbox]) -> None:
    tools, _ = hostile
    result = tools["floods"](size=50_000_000)
    assert result.startswith("x" * 65536) and result.endswith("[... 49934464 more characters cut]")


def test_a_tool_past_the_time_limit_is_ended_and_the_next_call_is_served(
    hostile: tuple[dict[str, Any], Sandbox],
) -> None:
    tools, sandbox = hostile
    with pytest.raises(ToolFailed, match=r"did not return within 1.5 s"):
        tools["sleeps"](seconds=30)
    assert tools["sleeps"](seconds=0) == "awake"
    assert sandbox.generation == 2  # restarted once


def test_a_tool_reaches_no_network_file_socket_or_process(
    hostile: tuple[dict[str, Any], Sandbox], tmp_path: Path
) -> None:
    tools, _ = hostile
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "listener.sock"))
    listener.listen()
    outside = tmp_path / "outside.txt"
    outside.write_text("a secret of the worker")
    try:
        for name, arguments, words in [
            ("connects", {"port": 5432}, "network"),
            ("reads", {"path": str(outside)}, "may not read"),
            # The kernel refuses a Unix socket outright (seccomp), before the audit hook could say why.
            ("unix", {"path": str(tmp_path / "listener.sock")}, "PermissionError"),
            ("unix", {"path": "/var/run/postgresql/.s.PGSQL.5432"}, "PermissionError"),
            ("spawns", {"program": "/bin/true"}, "processes"),
        ]:
            with pytest.raises(ToolFailed) as refused:
                tools[name](**arguments)
            assert words in str(refused.value), (name, str(refused.value))
    finally:
        listener.close()
    assert tools["echo"](text="fine") == "fine"


def test_an_environment_keeps_its_state_within_a_rollout_and_starts_afresh_at_reset(tmp_path: Path) -> None:
    spec, sandbox = _sandbox(tmp_path, environment_factory={"type": "python", "source": COUNTER, "class": "Counter"})
    try:
        counter_class = build_environment_factory(sandbox, spec)
        assert isinstance(counter_class, type)
        first, second = counter_class(), counter_class()
        assert first.reset(prompt="p", start=10) == " (start at 10)"
        second.reset(prompt="p")
        assert first.increment(by=2) == "12" and second.increment(by=1) == "1"
        assert first.get_reward() == 12.0 and second.get_reward() == 1.0
        first.reset(prompt="p")
        assert first.get_reward() == 0.0

        # A call past the limit restarts the sandbox: that state is gone, said so, and the next reset starts afresh.
        with pytest.raises(ToolFailed, match="did not return within"):
            first.wait(seconds=30)
        with pytest.raises(ToolFailed, match="state was lost"):
            second.increment(by=1)
        assert second.get_reward() is None  # left out of the reward, as TRL leaves out None
        second.reset(prompt="p", start=5)
        assert second.increment(by=1) == "6"
    finally:
        sandbox.close()


def test_reset_raising_fails_with_the_line_and_what_it_raised(tmp_path: Path) -> None:
    spec, sandbox = _sandbox(
        tmp_path,
        environment_factory={"type": "python", "source": BROKEN_RESET, "class": "Broken"},
        reward_funcs=[{"type": "builtin", "name": "length"}],
    )
    try:
        broken = build_environment_factory(sandbox, spec)
        assert isinstance(broken, type)
        with pytest.raises(RewardFunctionError) as failed:
            broken().reset(prompt="p")
        assert "environment_factory reset() raised ZeroDivisionError: division by zero" in str(failed.value)
        assert "line 4: return 1 / 0" in str(failed.value)
    finally:
        sandbox.close()
