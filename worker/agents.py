"""A job's tools and environments as `GRPOTrainer(tools=..., environment_factory=...)` takes them, with the users'
code in the job's sandbox, never in the trainer.

TRL needs callables it can read (name, signature, type hints, docstring: transformers' `get_json_schema` makes the
schema the model sees from them) and call. The trainer holds stand-ins built from what shared/spec/tools.py read in
the sources; calling one sends the call to the sandbox. Environments are stand-in classes whose instances own an
instance in the sandbox, addressed by handle:

- a tool that raises or runs past the sandbox's limit per call raises here with the reason, which TRL hands to the
  model as the tool's result (`{"error": ...}`) and counts in `tools/failure_frequency`; the job goes on. A call that
  ran too long restarts the sandbox, so the environments of that moment lose their state: their next tool calls say
  so, and the next `reset` starts them afresh.
- `reset` or `get_reward` raising fails the job, naming the method, the line and what it raised, like a reward.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from sandbox.agent_sources import checked, environment_specs, tool_specs
from sandbox.client import RewardCallFailed, Sandbox
from shared.spec.job import JobSpec
from shared.spec.tool_source import EnvironmentShape, ToolShape, read_environment, read_tools, type_hint
from worker.rewards import RewardFunctionError


class ToolFailed(RuntimeError):
    """A tool call that did not return: its message is what the model reads."""


def _signature(shape: ToolShape, method: bool) -> inspect.Signature:
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)] if method else []
    for parameter in shape.parameters:
        parameters.append(
            inspect.Parameter(
                parameter.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=type_hint(parameter.hint),
                default=inspect.Parameter.empty if parameter.required else parameter.default,
            )
        )
    return inspect.Signature(parameters)


def stand_in(shape: ToolShape, send: Callable[[Any, dict[str, Any]], Any], method: bool = False) -> Any:
    """A function TRL reads as the tool `shape` describes (name, signature, hints, docstring); calling it calls
    `send(self or None, arguments)`."""
    signature = _signature(shape, method)

    def tool(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            raise ToolFailed(f"{shape.name}: {error}") from None
        arguments = dict(bound.arguments)
        owner = arguments.pop("self", None)
        return send(owner, arguments)

    tool.__name__ = tool.__qualname__ = shape.name
    tool.__doc__ = shape.doc
    tool.__signature__ = signature  # type: ignore[attr-defined]
    tool.__annotations__ = {p.name: p.annotation for p in signature.parameters.values() if p.name != "self"}
    return tool


def _answer(sandbox: Sandbox, message: dict[str, Any], what: str) -> Any:
    """A tool's result as TRL appends it (text, or content blocks); ToolFailed with the reason otherwise."""
    try:
        return sandbox.tool_result(message, what)
    except RewardCallFailed as error:
        raise ToolFailed(str(error)) from None


def build_tools(sandbox: Sandbox, spec: JobSpec) -> list[Any]:
    """The stand-ins of the spec's tools (not the environments' own)."""
    tools = []
    for path, tool in tool_specs(spec):
        for shape in checked(*read_tools(tool, path)):

            def send(_owner: Any, arguments: dict[str, Any], name: str = shape.name) -> Any:
                return _answer(sandbox, {"kind": "tool", "name": name, "arguments": arguments}, f"tool {name!r}")

            tools.append(stand_in(shape, send))
    return tools


class _EnvironmentStandIn:
    """The trainer's side of one environment instance; its state lives in the sandbox."""

    _sandbox: Sandbox
    _environment: str
    _path: str

    def __init__(self) -> None:
        self._handle: int | None = None
        self._generation = -1

    def _lost(self) -> bool:
        return self._handle is None or self._generation != self._sandbox.generation or not self._sandbox.alive()

    def _open(self) -> int:
        """The handle of this rollout's instance in the sandbox, made anew when the sandbox was restarted."""
        if not self._sandbox.alive():
            self._sandbox.start()
        if self._handle is None or self._generation != self._sandbox.generation:
            answer = self._hook({"kind": "env_new", "environment": self._environment}, "creating")
            self._handle, self._generation = answer["handle"], self._sandbox.generation
        assert self._handle is not None
        return self._handle

    def _hook(self, message: dict[str, Any], what: str) -> dict[str, Any]:
        try:
            return self._sandbox.request(message, f"{self._path} {what}")
        except RewardCallFailed as error:
            raise RewardFunctionError(str(error), error.traceback) from None

    def reset(self, **row: Any) -> Any:
        handle = self._open()
        answer = self._hook({"kind": "env_call", "handle": handle, "method": "reset", "arguments": row}, "reset()")
        return answer["value"]

    def _call(self, method: str, arguments: dict[str, Any]) -> Any:
        if self._lost():
            raise ToolFailed(
                f"{method}: the environment's state was lost (a call ran past the sandbox's limit and it was "
                "restarted); it starts afresh at the next rollout"
            )
        message = {"kind": "env_call", "handle": self._handle, "method": method, "arguments": arguments}
        return _answer(self._sandbox, message, f"tool {method!r}")

    def _reward(self) -> Any:
        if self._lost():
            return None  # its state is gone: the rollout is left out of the reward, as TRL leaves out None
        message: dict[str, Any] = {"kind": "env_call", "handle": self._handle, "method": "get_reward", "arguments": {}}
        return self._hook(message, "get_reward()")["value"]

    @property
    def handle(self) -> int | None:
        """The sandbox instance a reward function gets for this rollout (None when it is gone)."""
        return None if self._lost() else self._handle


def environment_class(sandbox: Sandbox, name: str, path: str, shape: EnvironmentShape) -> type:
    """A class TRL instantiates per rollout: `reset`, the environment's tools as methods, `get_reward` when the
    environment has one (TRL adds a reward column for it), all answered by the sandbox."""
    members: dict[str, Any] = {"_sandbox": sandbox, "_environment": name, "_path": path}
    for tool in shape.tools:

        def send(owner: Any, arguments: dict[str, Any], method: str = tool.name) -> Any:
            return owner._call(method, arguments)

        members[tool.name] = stand_in(tool, send, method=True)
    if shape.has_get_reward:

        def get_reward(self: _EnvironmentStandIn) -> Any:
            return self._reward()

        members["get_reward"] = get_reward
    return type(shape.name, (_EnvironmentStandIn,), members)


def build_environment_factory(sandbox: Sandbox, spec: JobSpec) -> type | dict[str, type] | None:
    """What GRPOTrainer's `environment_factory` takes: a class, or a dict of classes by the names the dataset's
    `environment` column uses."""
    classes = {}
    for name, path, environment in environment_specs(spec):
        shape = checked(*read_environment(environment, path))
        classes[name] = environment_class(sandbox, name, path, shape)
    if not classes:
        return None
    single = classes.get("")
    return single if single is not None else classes


def sandbox_counts(sandbox: Sandbox | None) -> dict[str, Any] | None:
    """What the sandbox ran: calls and failures by tool (None when there was no sandbox or it is gone)."""
    if sandbox is None or not sandbox.alive():
        return None
    try:
        answer = sandbox.request({"kind": "stats"}, "counting tool calls")
    except RewardCallFailed:
        return None
    return {"calls": answer["calls"], "failures": answer["failures"]}
