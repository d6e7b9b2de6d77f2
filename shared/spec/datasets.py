"""The datasets a job spec names: rows inline, an uploaded file, a path on the workers, or a dataset on the Hub.

Each may carry a `column_map` that renames columns before training (`{"question": "prompt"}`), so a dataset
whose prompts sit under another name can be used as it is.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

COLUMN_MAP = Field(
    default=None,
    description='Columns to rename before training, old name to new: {"question": "prompt"}.',
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InlineDataset(_Strict):
    """Prompt rows given in the spec itself: each needs a `prompt`; other columns reach the reward functions."""

    rows: list[dict[str, Any]] = Field(min_length=1, description='Rows like {"prompt": "...", "answer": "..."}.')
    column_map: dict[str, str] | None = COLUMN_MAP


class FileDataset(_Strict):
    """A dataset uploaded with `POST /v1/files`."""

    file_id: str = Field(min_length=1, description="The id `POST /v1/files` returned (`file-...`).")
    column_map: dict[str, str] | None = COLUMN_MAP


class PathDataset(_Strict):
    """A dataset on the workers' disk: a .jsonl/.json/.csv/.parquet file or a `save_to_disk` folder (or, when no
    such path exists there, a dataset name on the Hub)."""

    path: str = Field(min_length=1, description="Path on the worker's filesystem.")
    split: str = Field(
        default="train",
        description="The split of a save_to_disk folder with splits (a DatasetDict) to load; a file, or a single "
        "saved dataset, is its one split.",
    )
    name: str | None = Field(
        default=None, description="Dataset configuration name: for a dataset on the Hub (files and folders have none)."
    )
    column_map: dict[str, str] | None = COLUMN_MAP


class HubDataset(_Strict):
    """A dataset on the Hugging Face Hub, as `datasets.load_dataset(hub, name, split=split)` loads it."""

    hub: str = Field(min_length=1, description="The dataset's name on the Hub, e.g. openai/gsm8k.")
    split: str = Field(default="train", description="Split to load.")
    name: str | None = Field(default=None, description="Dataset configuration name, e.g. main.")
    column_map: dict[str, str] | None = COLUMN_MAP


KINDS = {"rows": "inline", "file_id": "file", "path": "path", "hub": "hub"}


def _dataset_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, dict):
        return None
    return next((kind for key, kind in KINDS.items() if key in value), None)


DatasetSpec = Annotated[
    Annotated[InlineDataset, Tag("inline")]
    | Annotated[FileDataset, Tag("file")]
    | Annotated[PathDataset, Tag("path")]
    | Annotated[HubDataset, Tag("hub")],
    Discriminator(
        _dataset_kind,
        custom_error_type="dataset_kind",
        custom_error_message="a dataset needs `rows` (prompt rows), `file_id` (an uploaded file), `path` (a file "
        "or folder on the workers) or `hub` (a dataset on the Hugging Face Hub)",
    ),
]


def renamed(row: dict[str, Any], column_map: dict[str, str] | None) -> dict[str, Any]:
    """A row with its columns renamed by `column_map`."""
    if not column_map:
        return row
    return {column_map.get(key, key): value for key, value in row.items()}
