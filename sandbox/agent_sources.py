"""The sources the job's sandbox hosts for an agent's tools and environments (the built-ins included), as the worker
and the API's tool preview both hand them to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sandbox.builtin_tools
from shared.spec.tool_source import read_tools
from shared.spec.tools import AgentSpec, BuiltinTool, PythonEnvironment, PythonTool

BUILTIN_TOOLS_SOURCE = Path(sandbox.builtin_tools.__file__).read_text()


def _builtin_spec(tool: BuiltinTool) -> PythonTool:
    return PythonTool(type="python", source=BUILTIN_TOOLS_SOURCE, function=tool.name)


def tool_specs(spec: AgentSpec) -> list[tuple[str, PythonTool]]:
    return [
        (f"tools[{index}]", _builtin_spec(tool) if isinstance(tool, BuiltinTool) else tool)
        for index, tool in enumerate(spec.tools)
    ]


def environment_specs(spec: AgentSpec) -> list[tuple[str, str, PythonEnvironment]]:
    """(name, path, spec) of each environment; the single (unnamed) one is named "" as TRL names it None."""
    factory = spec.environment_factory
    if factory is None:
        return []
    if isinstance(factory, PythonEnvironment):
        return [("", "environment_factory", factory)]
    return [(name, f"environment_factory.{name}", environment) for name, environment in factory.items()]


def checked(shapes: Any, problems: list[Any]) -> Any:
    if problems:  # checked at submit; a spec stored before that check met its problems here
        raise ValueError("; ".join(problem.message for problem in problems))
    return shapes


def sandbox_tools(spec: AgentSpec) -> list[dict[str, Any]]:
    """What the sandbox hosts for the spec's tools: each source with the functions it offers."""
    entries = []
    for path, tool in tool_specs(spec):
        shapes = checked(*read_tools(tool, path))
        entries.append({"name": path, "path": path, "source": tool.source, "functions": [s.name for s in shapes]})
    return entries


def sandbox_environments(spec: AgentSpec) -> list[dict[str, Any]]:
    """What the sandbox hosts for the spec's environments."""
    return [
        {"name": name, "path": path, "source": environment.source, "class": environment.class_name}
        for name, path, environment in environment_specs(spec)
    ]
