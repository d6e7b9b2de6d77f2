"""The bodies of /v1/secrets (`api/routes/secrets.py`): a secret goes in with its value and comes out without it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class SecretIn(BaseModel):
    """A secret to set: its name (an environment variable's, e.g. HF_TOKEN) and its value, which no answer shows."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, examples=["HF_TOKEN"])
    value: SecretStr = Field(description="The credential itself: stored encrypted, never shown again.")


class SecretOut(BaseModel):
    """A secret as it is listed: its name and when and by whom it was set, never its value."""

    model_config = ConfigDict(from_attributes=True)

    project: str
    name: str
    created_at: datetime
    updated_at: datetime
    updated_by: str | None = Field(description="The key (by prefix) that set it last.")


class SecretList(BaseModel):
    data: list[SecretOut]


class SecretDeleted(BaseModel):
    project: str
    name: str
    deleted: bool = True
