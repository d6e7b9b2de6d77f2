"""Loading a spec's `train_dataset` / `eval_dataset` into a `datasets.Dataset` the trainer takes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from shared.dataset_specs import DatasetSpec, FileDataset, HubDataset, InlineDataset, PathDataset
from shared.models import UploadedFile

# File suffixes (and upload formats) and the `datasets` builder that reads them.
FILE_BUILDERS = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
FORMAT_BUILDERS = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}

FileLookup = Callable[[str], UploadedFile | None]


class DatasetProblem(ValueError):
    """A dataset that cannot be loaded or lacks what GRPO needs."""


def load_prompts(spec: DatasetSpec, field: str, find_file: FileLookup) -> Dataset:
    """Load the dataset a spec names, apply its column_map, and check it has the `prompt` column GRPO reads."""
    dataset = _load(spec, field, find_file)
    column_map = {old: new for old, new in (spec.column_map or {}).items() if old in dataset.column_names}
    if column_map:
        dataset = dataset.rename_columns(column_map)
    if "prompt" not in dataset.column_names:
        raise DatasetProblem(
            f"{field} has no 'prompt' column (its columns: {', '.join(dataset.column_names)}): "
            "GRPOTrainer generates completions for the 'prompt' column; add a column_map "
            '(e.g. {"question": "prompt"}) or rename the column that holds the prompts'
        )
    if len(dataset) == 0:
        raise DatasetProblem(f"{field} has no rows")
    return dataset


def _load(spec: DatasetSpec, field: str, find_file: FileLookup) -> Dataset:
    if isinstance(spec, InlineDataset):
        return Dataset.from_list(spec.rows)
    if isinstance(spec, FileDataset):
        return _load_upload(spec, field, find_file)
    if isinstance(spec, HubDataset):
        return _load_hub(spec.hub, spec.name, spec.split)
    assert isinstance(spec, PathDataset)
    path = Path(spec.path).expanduser()
    if path.is_dir():
        loaded = load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            if spec.split not in loaded:
                raise DatasetProblem(f"{spec.path} has no split {spec.split!r} (it has {', '.join(loaded)})")
            return loaded[spec.split]
        return loaded
    if path.is_file():
        builder = FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DatasetProblem(
                f"{spec.path}: unknown file type {path.suffix!r}: use one of {', '.join(FILE_BUILDERS)}"
            )
        return load_dataset(builder, data_files={spec.split: str(path)}, split=spec.split)
    # Neither a file nor a folder here: a dataset on the Hub.
    return _load_hub(spec.path, spec.name, spec.split)


def _load_upload(spec: FileDataset, field: str, find_file: FileLookup) -> Dataset:
    uploaded = find_file(spec.file_id)
    if uploaded is None:
        raise DatasetProblem(f"{field}.file_id {spec.file_id!r} is not an uploaded file (was it deleted?)")
    if not Path(uploaded.path).is_file():
        raise DatasetProblem(
            f"the bytes of {spec.file_id} ({uploaded.path}) are not on this worker's disk: workers and the API "
            "must share GRPO_DATA_DIR"
        )
    dataset = load_dataset(FORMAT_BUILDERS[uploaded.format], data_files={"train": uploaded.path}, split="train")
    column_map = {old: new for old, new in (uploaded.column_map or {}).items() if old in dataset.column_names}
    return dataset.rename_columns(column_map) if column_map else dataset


def _load_hub(name: str, config: str | None, split: str) -> Dataset:
    dataset = load_dataset(name, config, split=split)
    if not isinstance(dataset, Dataset):
        raise DatasetProblem(f"{name} split {split!r} is not a plain dataset (streaming is not supported)")
    return dataset
