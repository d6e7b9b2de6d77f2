"""Loading a spec's `train_dataset` / `eval_dataset` into a `datasets.Dataset` the trainer takes."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from shared.spec import DatasetSpec, InlineDataset

# File suffixes and the `datasets` builder that reads them.
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class DatasetProblem(ValueError):
    """A dataset that cannot be loaded or lacks what GRPO needs."""


def load_prompts(spec: DatasetSpec, field: str) -> Dataset:
    """Load the dataset a spec names and check it has the `prompt` column GRPOTrainer reads."""
    dataset = _load(spec)
    if "prompt" not in dataset.column_names:
        raise DatasetProblem(
            f"{field} has no 'prompt' column (its columns: {', '.join(dataset.column_names)}): "
            "GRPOTrainer generates completions for the 'prompt' column; rename the column that holds the prompts"
        )
    if len(dataset) == 0:
        raise DatasetProblem(f"{field} has no rows")
    return dataset


def _load(spec: DatasetSpec) -> Dataset:
    if isinstance(spec, InlineDataset):
        return Dataset.from_list(spec.rows)
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
    dataset = load_dataset(spec.path, spec.name, split=spec.split)
    if not isinstance(dataset, Dataset):
        raise DatasetProblem(f"{spec.path} split {spec.split!r} is not a plain dataset (streaming is not supported)")
    return dataset
