"""Request and answer of POST /v1/tools/preview."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.spec.tools import PythonEnvironment, ToolSpec


class ToolCallIn(BaseModel):
    """A call as TRL parses it from a completion: the function's name and its arguments."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolPreviewRequest(BaseModel):
    """An agent's tools and environment (as a job spec writes them), and the calls to try."""

    model_config = ConfigDict(extra="forbid")

    tools: list[ToolSpec] = Field(default_factory=list, max_length=64)
    environment_factory: PythonEnvironment | dict[str, PythonEnvironment] | None = None
    environment: str | None = Field(
        default=None, description="With a dict of environments: which one (as a row's `environment` column names it)."
    )
    row: dict[str, Any] = Field(
        default_factory=dict, description="The dataset row reset(**row) gets (its prompt and other columns)."
    )
    calls: list[ToolCallIn] = Field(min_length=1, max_length=64)


class ToolCallOut(BaseModel):
    name: str
    result: Any = Field(description="What the model would read (the tool's result as text, or content blocks).")
    error: str | None = Field(description="Why it has no result: what it raised, or how long it ran.")
    seconds: float


class ToolPreviewOut(BaseModel):
    calls: list[ToolCallOut]
    observation: Any = Field(description="What the environment's reset() returned (appended to the prompt).")
    reward: float | None = Field(description="What the environment's get_reward() scored the rollout.")
    error: str | None = Field(description="reset() or get_reward() raised: a job would fail with this.")
    output: str = Field(description="What the tools and the environment printed.")
    sandbox: str | None = Field(description="What the kernel enforced on the sandbox the calls ran in.")
