"""9. Tool calls: the round trip of one call to a tool in the job's sandbox (through the trainer's stand-in, as TRL
calls it), beside the same function called in the training process itself (what a bare TRL script does), and an
environment method the same way. Each call is a JSON line each way over a pipe to the sandbox process."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Sizes, summary_ms
from sandbox.agent_sources import sandbox_environments, sandbox_tools
from sandbox.builtin_tools import calculator
from sandbox.client import Sandbox, SandboxLimits
from shared.spec.job import JobSpec
from tests.specs import COUNTER, job_spec


def _timed(call: Callable[[], Any], count: int) -> list[float]:
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    from worker.agents import build_environment_factory, build_tools

    spec = JobSpec.model_validate(
        {
            **job_spec("m"),
            "tools": [{"type": "builtin", "name": "calculator"}],
            "environment_factory": {"type": "python", "source": COUNTER, "class": "Counter"},
        }
    )
    count = max(sizes.ingest_points // 50, 10)
    sandbox = Sandbox([], work / "tools", SandboxLimits(), None, sandbox_tools(spec), sandbox_environments(spec))
    sandbox.start()
    try:
        (tool,) = build_tools(sandbox, spec)
        environment_class = build_environment_factory(sandbox, spec)
        assert isinstance(environment_class, type)
        environment = environment_class()
        environment.reset(prompt="p")
        _timed(lambda: tool(expression="(3 + 4) * 2"), 20)  # warm
        sandboxed = summary_ms(_timed(lambda: tool(expression="(3 + 4) * 2"), count))
        method = summary_ms(_timed(lambda: environment.increment(by=1), count))
    finally:
        sandbox.close()
    in_process = summary_ms(_timed(lambda: calculator("(3 + 4) * 2"), count))
    return {"sandboxed_tool": sandboxed, "environment_method": method, "in_process_tool": in_process}
