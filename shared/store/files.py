"""Uploaded prompt datasets: reading and checking an upload (JSONL, JSON, CSV, Parquet), storing it, listing it.

An upload is read row by row before anything is kept: a file that does not parse, has no prompts, empty prompts, or
mixes text prompts with chat prompts is refused with the row numbers of the problems, and nothing is stored. The
bytes live in the data dir (`files/<id>/`), never in the database; the database keeps what the API shows.
"""

from __future__ import annotations

import csv
import json
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from shared.access.audit import record
from shared.access.projects import DEFAULT_PROJECT
from shared.spec.datasets import renamed
from shared.spec.problems import Problem
from shared.store.json_sql import json_safe
from shared.store.models import Job, UploadedFile, utcnow
from shared.store.states import JobStatus

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SAMPLE_ROWS = 3
MAX_PROBLEMS = 5
ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value, JobStatus.PAUSED.value)


class UploadRefused(ValueError):
    """An upload the service will not keep; `problems` say where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems))


class FileInUse(RuntimeError):
    """A file a queued, running or paused job trains on."""


@dataclass
class FileReport:
    """What reading an upload found."""

    format: str
    rows: int = 0
    prompt_format: str = "standard"
    columns: list[str] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list)


def new_file_id() -> str:
    return f"file-{secrets.token_hex(8)}"


def file_format(filename: str) -> str:
    """jsonl, json, csv or parquet, from the file name; raises UploadRefused for anything else."""
    fmt = FORMATS.get(Path(filename).suffix.lower())
    if fmt is None:
        raise UploadRefused([Problem("file", f"{filename!r}: upload a .jsonl, .json, .csv or .parquet file")])
    return fmt


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _rows(path: Path, fmt: str) -> Iterator[tuple[str, Any]]:
    """(where, row) for each row of the file; `where` is how a person finds it (`line 7`, `row 3`)."""
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    try:
                        row = json.loads(line, parse_constant=_no_constant)
                    except ValueError as error:
                        raise ValueError(f"line {number}: {error}") from None
                    yield f"line {number}", row
    elif fmt == "json":
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
        if not isinstance(data, list):
            raise ValueError('a .json dataset must be a list of rows ([{"prompt": ...}, ...])')
        for number, row in enumerate(data, start=1):
            yield f"row {number}", row
    elif fmt == "csv":
        with path.open(encoding="utf-8", newline="") as text:
            for number, row in enumerate(csv.DictReader(text), start=1):
                yield f"row {number} (line {number + 1})", row
    else:
        import pyarrow.parquet as parquet

        number = 0
        for batch in parquet.ParquetFile(path).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                number += 1
                yield f"row {number}", row


def _prompt_format(value: Any) -> str | None:
    """`standard` (text), `conversational` (chat messages), or None for anything that is not a prompt."""
    if isinstance(value, str):
        return "standard" if value.strip() else None
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    ):
        return "conversational"
    return None


def _first_error_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _missing_prompt(row: dict[str, Any]) -> str:
    """What to say when the first row has no 'prompt' column: its columns, and the column_map that likely fixes it."""
    others = ", ".join(row) or "none"
    guess = next((c for c in ("question", "query", "instruction", "input", "text") if c in row), None)
    hint = json.dumps({guess or "your_column": "prompt"})
    return f"there is no 'prompt' column (columns: {others}): upload again with column_map={hint}, or rename the column"


@dataclass
class _UploadCheck:
    """What reading an upload has found so far; every row is held against the first row's columns and prompt."""

    report: FileReport
    column_map: dict[str, str] | None
    problems: list[Problem] = field(default_factory=list)
    first_columns: tuple[str, set[str]] | None = None
    first_format: tuple[str, str] | None = None

    def refuse(self, message: str) -> None:
        """Record a problem with the file."""
        self.problems.append(Problem("file", message))

    def add_row(self, where: str, raw: Any) -> bool:
        """Check one row and count and sample it; False when the rest of the file is not worth reading."""
        if not isinstance(raw, dict):
            self.refuse(f"{where}: a row must be an object with a 'prompt', not {type(raw).__name__}")
            return True
        row = renamed(raw, self.column_map)
        self.report.rows += 1
        if self.first_columns is None:
            self.first_columns = (where, set(row))
            self.report.columns = list(row)
            if "prompt" not in row:
                # Every later row has the first row's columns, so none of them has a prompt either.
                self.refuse(_missing_prompt(row))
                return False
        elif not self._same_columns(where, row, self.first_columns):
            return True
        if self._check_prompt(where, row) and len(self.report.sample) < SAMPLE_ROWS:
            # Parquet holds values JSON has no type for (bytes, timestamps): shown as text.
            self.report.sample.append(json.loads(json.dumps(json_safe(row), default=str)))
        return True

    def _same_columns(self, where: str, row: dict[str, Any], first: tuple[str, set[str]]) -> bool:
        """Whether the row has the first row's columns (a problem recorded when not)."""
        if set(row) == first[1]:
            return True
        self.refuse(
            f"{where}: columns {sorted(row)} differ from the {first[0]} columns "
            f"{sorted(first[1])}: every row needs the same columns"
        )
        return False

    def _check_prompt(self, where: str, row: dict[str, Any]) -> bool:
        """Whether the row holds a prompt (a problem recorded when not, or when not of the first prompt's kind)."""
        prompt_format = _prompt_format(row.get("prompt"))
        if prompt_format is None:
            self.refuse(
                f"{where}: the prompt is empty or not a prompt (a string, or a list of chat messages "
                '[{"role": "user", "content": "..."}])'
            )
            return False
        if self.first_format is None:
            self.first_format = (where, prompt_format)
            self.report.prompt_format = prompt_format
        elif prompt_format != self.first_format[1]:
            # Still a prompt, so True: the row is sampled, but the file is refused.
            self.refuse(
                f"{where}: a {prompt_format} prompt, where {self.first_format[0]} has a {self.first_format[1]} one: "
                "use text prompts or chat prompts, not both"
            )
        return True


def inspect_upload(path: Path, filename: str, column_map: dict[str, str] | None) -> FileReport:
    """Read a whole upload and check it is a prompt dataset GRPO can train on; raises UploadRefused."""
    report = FileReport(file_format(filename))
    check = _UploadCheck(report, column_map)
    try:
        for where, raw in _rows(path, report.format):
            # Stop at MAX_PROBLEMS: enough to fix at once, without reading on through a file that is wrong throughout.
            if len(check.problems) >= MAX_PROBLEMS or not check.add_row(where, raw):
                break
    except (ValueError, UnicodeDecodeError, OSError, csv.Error) as error:
        check.refuse(f"not valid {report.format.upper()}: {_first_error_line(error)}")
    except Exception as error:  # pyarrow's own errors, for a file that is not Parquet
        check.refuse(f"not valid {report.format.upper()}: {type(error).__name__}: {_first_error_line(error)}")
    if not check.problems and report.rows == 0:
        check.refuse("the file has no rows")
    if check.problems:
        raise UploadRefused(check.problems)
    return report


def safe_filename(filename: str) -> str:
    """The name to keep the upload under: its last path part, with anything unusual replaced."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename).name).lstrip(".")
    return name or "dataset"


def store_upload(
    session: Session,
    files_dir: Path,
    incoming: Path,
    filename: str,
    report: FileReport,
    column_map: dict[str, str] | None,
    project: str = DEFAULT_PROJECT,
    by: str | None = None,
) -> UploadedFile:
    """Move a checked upload into place and record it as `project`'s, uploaded by `by` in the audit log (the caller
    commits)."""
    file_id = new_file_id()
    folder = files_dir / file_id
    folder.mkdir(parents=True)
    final = folder / safe_filename(filename)
    shutil.move(str(incoming), final)
    uploaded = UploadedFile(
        id=file_id,
        filename=Path(filename).name[:255],
        format=report.format,
        bytes=final.stat().st_size,
        rows=report.rows,
        prompt_format=report.prompt_format,
        columns=report.columns,
        column_map=column_map,
        sample=report.sample,
        path=str(final),
        created_at=utcnow(),
        project=project,
    )
    session.add(uploaded)
    record(session, by, "file.upload", project=project, target=file_id, data=_audited(uploaded))
    return uploaded


def _audited(uploaded: UploadedFile) -> dict[str, Any]:
    """What the audit log says of a file: its name and size (never its rows)."""
    return {"filename": uploaded.filename, "bytes": uploaded.bytes}


def get_file(session: Session, file_id: str, project: str | None = None) -> UploadedFile | None:
    """The file, or None; of `project` only, when given (another project's file is as good as absent)."""
    uploaded = session.get(UploadedFile, file_id)
    return uploaded if uploaded is not None and project in (None, uploaded.project) else None


def list_files(session: Session, project: str | None = None) -> list[UploadedFile]:
    """Uploaded files, newest first: of one project, or of every project (None)."""
    statement = select(UploadedFile).order_by(UploadedFile.created_at.desc(), UploadedFile.id.desc())
    if project is not None:
        statement = statement.where(UploadedFile.project == project)
    return list(session.scalars(statement))


def file_columns(
    session: Session, file_ids: list[str], *, lock: bool = False, project: str | None = None
) -> dict[str, list[str]]:
    """The columns of each of these files that exists (and is `project`'s, when given: a spec may name only its
    own project's files).

    With `lock`, the rows stay share-locked until the session commits, so that a job being stored and a delete of
    its file cannot pass each other (`delete_file` takes the row lock first).
    """
    if not file_ids:
        return {}
    query = select(UploadedFile.id, UploadedFile.columns).where(UploadedFile.id.in_(file_ids))
    if project is not None:
        query = query.where(UploadedFile.project == project)
    if lock:
        query = query.with_for_update(read=True)
    return {row.id: list(row.columns) for row in session.execute(query)}


def jobs_using(session: Session, file_id: str) -> list[str]:
    """Queued, running or paused jobs that train or evaluate on the file."""
    uses = or_(
        Job.spec["train_dataset"]["file_id"].as_string() == file_id,
        Job.spec["eval_dataset"]["file_id"].as_string() == file_id,
    )
    return list(session.scalars(select(Job.id).where(Job.status.in_(ACTIVE), uses)))


def delete_file(session: Session, file_id: str, project: str | None = None, by: str | None = None) -> Path | None:
    """Delete a file's row, by `by` in the audit log; None if there is no such file (of `project`, when given),
    FileInUse while a job needs it.

    Returns the folder of its bytes, for the caller to remove once the session has committed.
    """
    uploaded = session.get(UploadedFile, file_id, with_for_update=True)
    if uploaded is None or project not in (None, uploaded.project):
        return None
    users = jobs_using(session, file_id)
    if users:
        raise FileInUse(
            f"file {file_id} is used by job(s) {', '.join(users)} ({len(users)} not finished): cancel "
            "them or wait until they end"
        )
    session.delete(uploaded)
    record(session, by, "file.delete", project=uploaded.project, target=file_id, data=_audited(uploaded))
    return Path(uploaded.path).parent
