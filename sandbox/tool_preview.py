"""The tool preview (`POST /v1/tools/preview`): an agent's tools and environment tried on given calls, without a
worker, a model or a GPU, in the sandbox jobs run them in.

With an environment, one instance is made and `reset(**row)` called first (its observation comes back); then each
call runs, a standalone tool by its name or the environment's method of that name, as TRL runs a completion's tool
calls; then `get_reward()`, when the environment has one. What the code prints comes back too.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.agent_sources import sandbox_environments, sandbox_tools
from sandbox.client import RewardCallFailed, Sandbox, SandboxLimits
from sandbox.preview import MAX_OUTPUT_CHARS
from shared.spec.tools import AgentSpec


@dataclass
class ToolCallResult:
    """One call: the tool's result (what the model would read), or why there is none."""

    name: str
    result: Any = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class ToolPreview:
    calls: list[ToolCallResult] = field(default_factory=list)
    observation: Any = None  # what reset() returned (appended to the prompt)
    reward: float | None = None  # get_reward()'s score of the rollout
    error: str | None = None  # reset() or get_reward() raised: a job would fail
    output: str = ""
    confinement: str | None = None


def _run(
    sandbox: Sandbox,
    agent: AgentSpec,
    calls: list[dict[str, Any]],
    row: dict[str, Any],
    env: str | None,
    scores: bool,
    preview: ToolPreview,
) -> None:
    standalone = {name for entry in sandbox_tools(agent) for name in entry["functions"]}
    sandbox.start()
    handle = None
    if agent.environment_factory is not None:
        made = sandbox.request({"kind": "env_new", "environment": env or ""}, "creating the environment")
        handle = made["handle"]
        reset = {"kind": "env_call", "handle": handle, "method": "reset", "arguments": row}
        preview.observation = sandbox.request(reset, "reset()")["value"]
    for call in calls:
        name, arguments = call["name"], call.get("arguments") or {}
        result = ToolCallResult(name)
        began = time.perf_counter()
        if name in standalone:
            message: dict[str, Any] = {"kind": "tool", "name": name, "arguments": arguments}
        else:
            message = {"kind": "env_call", "handle": handle, "method": name, "arguments": arguments}
        try:
            if name not in standalone and handle is None:
                raise RewardCallFailed(f"Tool {name} not found.")  # TRL's own words for it
            result.result = sandbox.tool_result(message, f"tool {name!r}")
        except RewardCallFailed as error:
            result.error = str(error)
        result.seconds = round(time.perf_counter() - began, 4)
        preview.calls.append(result)
    if handle is not None and scores:
        scored = {"kind": "env_call", "handle": handle, "method": "get_reward", "arguments": {}}
        preview.reward = sandbox.request(scored, "get_reward()")["value"]


def preview_tools(
    agent: AgentSpec,
    calls: list[dict[str, Any]],
    limits: SandboxLimits,
    row: dict[str, Any] | None = None,
    environment: str | None = None,
    scores: bool = False,
) -> ToolPreview:
    """Run `calls` (each `{"name", "arguments"}`) against the agent's tools and environment in a fresh sandbox;
    `scores`: the environment has a get_reward() to call at the end."""
    preview = ToolPreview()
    with tempfile.TemporaryDirectory(prefix="grpo-tool-preview-") as scratch:
        log_path = Path(scratch) / "output.log"
        with log_path.open("wb") as log:
            sandbox = Sandbox(
                [], Path(scratch) / "scratch", limits, log, sandbox_tools(agent), sandbox_environments(agent)
            )
            try:
                _run(sandbox, agent, calls, row or {}, environment, scores, preview)
            except RewardCallFailed as error:
                preview.error = str(error)
            finally:
                sandbox.close()
        output = log_path.read_text(errors="replace")
    preview.confinement = sandbox.confinement.describe() if sandbox.confinement is not None else None
    if len(output) > MAX_OUTPUT_CHARS:
        output = output[:MAX_OUTPUT_CHARS] + f"\n[... {len(output) - MAX_OUTPUT_CHARS} more characters]"
    preview.output = output
    return preview
