"""Loading a spec's `train_dataset` / `eval_dataset` into a `datasets.Dataset` the trainer takes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from datasets.exceptions import DatasetGenerationError

from shared.spec.datasets import DatasetSpec, FileDataset, HubDataset, InlineDataset, PathDataset
from shared.spec.policy import is_dataset_path
from shared.store.models import UploadedFile

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
        return _load_hub(spec.hub, spec.name, spec.split, f"{field}.hub {spec.hub!r}")
    assert isinstance(spec, PathDataset)
    where = f"{field}.path {spec.path!r}"
    path = Path(spec.path).expanduser()
    if path.is_dir():
        return _load_folder(path, spec.split, where)
    if path.is_file():
        return _load_file(path, spec.split, where)
    if is_dataset_path(spec.path):  # the rule the API's policy applies too
        raise DatasetProblem(
            f"{where} does not exist on this worker: give a {', '.join(FILE_BUILDERS)} file or a save_to_disk "
            "folder that the worker can read (a path on the worker's own disk, not the client's)"
        )
    # Neither a file nor a folder here, and it could be a name on the Hub.
    return _load_hub(spec.path, spec.name, spec.split, where, tried_disk=True)


def _load_folder(path: Path, split: str, where: str) -> Dataset:
    try:
        loaded = load_from_disk(str(path))
    except Exception as error:
        raise DatasetProblem(
            f"{where} is a folder but not one that datasets' save_to_disk wrote ({_reason(error)}): give the "
            "folder save_to_disk wrote, or a data file"
        ) from error
    if not isinstance(loaded, DatasetDict):
        return loaded  # a single dataset: it has no splits to choose from
    if split not in loaded:
        raise DatasetProblem(f"{where} has no split {split!r}: set split to one of {', '.join(loaded)}")
    return loaded[split]


def _load_file(path: Path, split: str, where: str) -> Dataset:
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DatasetProblem(f"{where} has an unknown file type {path.suffix!r}: use one of {', '.join(FILE_BUILDERS)}")
    if path.stat().st_size == 0:
        raise DatasetProblem(f"{where} is an empty file")
    try:
        return load_dataset(builder, data_files={split: str(path)}, split=split)
    except Exception as error:
        raise DatasetProblem(f"{where} could not be read as a {path.suffix} file: {_reason(error)}") from error


def _load_upload(spec: FileDataset, field: str, find_file: FileLookup) -> Dataset:
    uploaded = find_file(spec.file_id)
    if uploaded is None:
        raise DatasetProblem(f"{field}.file_id {spec.file_id!r} is not an uploaded file (was it deleted?)")
    if not Path(uploaded.path).is_file():
        raise DatasetProblem(
            f"the bytes of {spec.file_id} ({uploaded.path}) are not on this worker's disk: workers and the API "
            "must share GRPO_DATA_DIR"
        )
    try:
        dataset = load_dataset(FORMAT_BUILDERS[uploaded.format], data_files={"train": uploaded.path}, split="train")
    except Exception as error:
        raise DatasetProblem(f"{field}.file_id {spec.file_id!r} could not be read: {_reason(error)}") from error
    column_map = {old: new for old, new in (uploaded.column_map or {}).items() if old in dataset.column_names}
    return dataset.rename_columns(column_map) if column_map else dataset


def _load_hub(name: str, config: str | None, split: str, where: str, tried_disk: bool = False) -> Dataset:
    details = f"name {config!r}, split {split!r}" if config else f"split {split!r}"
    if tried_disk:
        what = f"{where} is not a file or folder on this worker, and as a dataset on the Hub ({details}) it"
    else:
        what = f"{where} ({details})"
    try:
        dataset = load_dataset(name, config, split=split)
    except Exception as error:
        hint = ""
        if isinstance(error, ConnectionError) or "offline" in str(error).lower():
            hint = (
                ": this worker cannot reach the Hugging Face Hub (no network, or HF_HUB_OFFLINE is set); save the "
                "dataset with save_to_disk where the Hub can be reached, and give the folder's path on the worker"
            )
        raise DatasetProblem(f"{what} could not be loaded from the Hugging Face Hub: {_reason(error)}{hint}") from error
    if not isinstance(dataset, Dataset):
        raise DatasetProblem(f"{what} is not a plain dataset (streaming is not supported)")
    return dataset


def _reason(error: BaseException) -> str:
    """What went wrong, in the words of the error that caused it: `datasets` wraps a parse error of the file in a
    DatasetGenerationError that says only 'An error occurred while generating the dataset'."""
    while isinstance(error, DatasetGenerationError) and error.__cause__ is not None:
        error = error.__cause__
    message = str(error).strip()
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
