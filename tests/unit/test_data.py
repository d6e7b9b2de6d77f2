"""Loading a job's datasets (worker/data.py) from real files: rows inline, files and save_to_disk folders on the
worker, the Hub (offline here); column maps, splits, configuration names, and readable errors for what cannot load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset, DatasetDict
from pydantic import TypeAdapter

from shared.spec.datasets import DatasetSpec
from shared.store.models import UploadedFile
from worker.data import DatasetProblem, load_prompts

SPEC = TypeAdapter(DatasetSpec)
QUESTIONS = [{"question": "What is 2+2?", "solution": "4"}, {"question": "What is 3+3?", "solution": "6"}]
RENAMES = {"question": "prompt", "solution": "answer"}


def no_uploads(file_id: str) -> UploadedFile | None:
    return None


def load(spec: dict[str, Any], field: str = "train_dataset") -> Dataset:
    return load_prompts(SPEC.validate_python(spec), field, no_uploads)


def problem(spec: dict[str, Any], field: str = "train_dataset") -> str:
    with pytest.raises(DatasetProblem) as raised:
        load(spec, field)
    return str(raised.value)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def splits_folder(tmp_path: Path) -> Path:
    """A DatasetDict with train and test splits, as `save_to_disk` writes it."""
    folder = tmp_path / "math"
    DatasetDict(
        {
            "train": Dataset.from_list([{"q": "train 1", "a": "1"}, {"q": "train 2", "a": "2"}]),
            "test": Dataset.from_list([{"q": "test 1", "a": "3"}]),
        }
    ).save_to_disk(str(folder))
    return folder


def test_inline_rows_are_renamed_by_the_column_map() -> None:
    dataset = load({"rows": QUESTIONS, "column_map": {**RENAMES, "not_a_column": "ignored"}})
    assert dataset.column_names == ["prompt", "answer"]
    assert dataset.to_list() == [{"prompt": "What is 2+2?", "answer": "4"}, {"prompt": "What is 3+3?", "answer": "6"}]
    # Without the map there is no prompt column, and the error says how to name one.
    message = problem({"rows": QUESTIONS}, field="eval_dataset")
    assert message.startswith("eval_dataset has no 'prompt' column (its columns: question, solution)")
    assert 'add a column_map (e.g. {"question": "prompt"})' in message


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_a_file_on_the_worker_is_loaded_with_its_column_map(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"questions{suffix}"
    rows = Dataset.from_list(QUESTIONS)
    if suffix == ".jsonl":
        rows.to_json(str(path), lines=True)
    elif suffix == ".json":
        path.write_text(json.dumps(QUESTIONS))  # a list of rows
    elif suffix == ".csv":
        rows.to_csv(str(path), index=False)
    else:
        rows.to_parquet(str(path))
    dataset = load({"path": str(path), "column_map": RENAMES})
    assert dataset.column_names == ["prompt", "answer"]
    assert [row["prompt"] for row in dataset] == ["What is 2+2?", "What is 3+3?"]
    assert [str(row["answer"]) for row in dataset] == ["4", "6"]  # csv reads the answers as numbers


def test_split_chooses_a_split_of_a_save_to_disk_folder(splits_folder: Path) -> None:
    renames = {"q": "prompt", "a": "answer"}
    assert [r["prompt"] for r in load({"path": str(splits_folder), "column_map": renames})] == ["train 1", "train 2"]
    test = load({"path": str(splits_folder), "split": "test", "column_map": renames})
    assert test.to_list() == [{"prompt": "test 1", "answer": "3"}]
    message = problem({"path": str(splits_folder), "split": "validation"}, field="eval_dataset")
    assert (
        message
        == f"eval_dataset.path {str(splits_folder)!r} has no split 'validation': set split to one of train, test"
    )


def test_a_single_file_or_dataset_has_one_split_and_name_is_for_the_hub(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "questions.jsonl", QUESTIONS)
    # A file is the one split it is loaded as; `name` (a Hub configuration) does not apply to it.
    for spec in ({"split": "test"}, {"name": "main"}, {"split": "validation", "name": "main"}):
        dataset = load({"path": str(path), "column_map": RENAMES, **spec})
        assert [r["prompt"] for r in dataset] == ["What is 2+2?", "What is 3+3?"], spec
    # So is a single Dataset saved to disk (no DatasetDict, no splits to choose from).
    Dataset.from_list([{"prompt": "only"}]).save_to_disk(str(tmp_path / "single"))
    assert load({"path": str(tmp_path / "single"), "split": "test"}).to_list() == [{"prompt": "only"}]
    # On the Hub, name and split are the dataset's configuration and split (the error names both).
    assert "(name 'main', split 'test')" in problem({"hub": "openai/gsm8k", "name": "main", "split": "test"})
    assert "openai/gsm8k' (split 'train')" in problem({"hub": "openai/gsm8k"})


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.jsonl", "does not exist on this worker: give a .jsonl, "),
        (lambda d: d / "no" / "such" / "folder", "does not exist on this worker: "),
        (lambda d: _text(d / "broken.jsonl", '{"prompt": "ok"}\n{"prompt": \n'), "could not be read as a .jsonl "),
        (lambda d: _text(d / "broken.csv", 'prompt,answer\n"never closed,1\n'), "could not be read as a .csv "),
        (lambda d: _text(d / "broken.parquet", "PAR1 not really"), "could not be read as a .parquet file: "),
        (lambda d: _text(d / "empty.jsonl", ""), "is an empty file"),
        (lambda d: _text(d / "notes.txt", "prompt\n"), "has an unknown file type '.txt': use one of .jsonl"),
        (lambda d: _text(d / "folder" / "notes.md", "hi").parent, "is a folder but not one that datasets' save_to_"),
    ],
    ids=["missing-file", "missing-folder", "bad-jsonl", "bad-csv", "bad-parquet", "empty", "unknown-type", "folder"],
)
def test_a_path_that_cannot_be_loaded_is_a_readable_error_naming_it(tmp_path: Path, make: Any, expected: str) -> None:
    path = make(tmp_path)
    message = problem({"path": str(path)})
    assert message.startswith(f"train_dataset.path {str(path)!r} "), message
    assert expected in message, message
    assert "Traceback" not in message and "An error occurred while generating the dataset" not in message


def test_the_parse_error_of_a_broken_file_is_said_in_its_own_words(tmp_path: Path) -> None:
    path = _text(tmp_path / "broken.jsonl", '{"prompt": "ok"}\n{"prompt": \n')
    message = problem({"path": str(path)})
    assert message.startswith(f"train_dataset.path {str(path)!r} could not be read as a .jsonl file: ArrowInvalid: ")
    assert "JSON parse error" in message


def test_a_hub_dataset_that_cannot_be_fetched_offline_is_a_readable_error() -> None:
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE, "the tests run with HF_HUB_OFFLINE=1 (tests/conftest.py)"
    message = problem({"hub": "openai/gsm8k", "name": "main", "column_map": {"question": "prompt"}})
    assert message == (
        "train_dataset.hub 'openai/gsm8k' (name 'main', split 'train') could not be loaded from the Hugging Face "
        "Hub: ConnectionError: Couldn't reach 'openai/gsm8k' on the Hub (OfflineModeIsEnabled): this worker cannot "
        "reach the Hugging Face Hub (no network, or HF_HUB_OFFLINE is set); save the dataset with save_to_disk "
        "where the Hub can be reached, and give the folder's path on the worker"
    )
    # A path that is neither a file nor a folder here is taken for a name on the Hub, and says both.
    fallback = problem({"path": "openai/gsm8k", "name": "main"})
    assert fallback.startswith(
        "train_dataset.path 'openai/gsm8k' is not a file or folder on this worker, and as a dataset on the Hub "
        "(name 'main', split 'train') it could not be loaded from the Hugging Face Hub: ConnectionError: "
    )


def test_an_uploaded_file_that_is_gone_is_a_readable_error() -> None:
    assert (
        problem({"file_id": "file-gone"})
        == "train_dataset.file_id 'file-gone' is not an uploaded file (was it deleted?)"
    )


def _text(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path
