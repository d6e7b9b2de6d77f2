"""Telling a missing local model apart from a hub id, before transformers says something confusing about repo ids."""

from __future__ import annotations

from pathlib import Path

from shared.spec.policy import is_model_path


class ModelNotFound(ValueError):
    """A model named by a local path that this worker cannot read."""


def check_model_reference(model: str, field: str = "model") -> None:
    """A model that looks like a local path must be a saved model here; anything else is left to the Hub."""
    if not is_model_path(model):  # the rule the API's policy applies too
        return
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        where = "does not exist" if not path.exists() else "has no config.json"
        raise ModelNotFound(
            f"{field} {model!r} {where} on this worker: give the path of a saved model (a folder with config.json) "
            "that the worker can read, or a hub id like Qwen/Qwen2-0.5B-Instruct"
        )
