"""/v1/files: prompt datasets uploaded for jobs to train on (`"train_dataset": {"file_id": ...}`).

An upload is checked whole (see `shared.store.files`) before anything is kept; the bytes go to the data dir, the
database keeps what the API shows. A request larger than `GRPO_MAX_UPLOAD_MB` is refused from its Content-Length,
before its body is read; one sent without a Content-Length as soon as what arrived passes the limit.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.routing import APIRoute
from starlette.types import Message, Receive

from api.auth import Reader, Writer, scope
from api.deps import ServicesDep, services
from api.errors import ApiError, not_found
from api.ratelimit import RATE_LIMITED_RESPONSE, Action, count_before_body, rate_limited
from api.schemas import ErrorBody, FileDeleted, FileList, FileOut
from shared.spec.problems import Problem, SpecError
from shared.store import files
from shared.store.files import FileInUse, UploadRefused
from shared.store.models import UploadedFile

MIB = 2**20
# Room in a request's Content-Length for the multipart framing and the other form fields.
FORM_OVERHEAD = 64 * 1024
COPY_CHUNK = 4 * MIB


def _too_large(limit_mb: int) -> ApiError:
    return ApiError(
        413,
        "file_too_large",
        f"the upload is larger than this service takes ({limit_mb} MiB): split the dataset, or ask the operator "
        "to raise GRPO_MAX_UPLOAD_MB",
    )


class _BodyTooLarge(Exception):
    """Raised into the form parser when a request's body passes the upload limit."""


class _LimitedReceive:
    """A request's receive channel that stops handing the body on once it passes `limit` bytes.

    A body sent without a Content-Length (chunked) would otherwise be spooled whole to the API's temporary disk
    by the form parser before the endpoint could refuse it. uvicorn reads and drops the rest of a body whose
    request was already answered, so the client, still sending, gets the 413.
    """

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._size = 0
        self.exceeded = False

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._size += len(message.get("body", b""))
            if self._size > self._limit:
                self.exceeded = True
                raise _BodyTooLarge
        return message


class UploadLimitRoute(APIRoute):
    """A route that refuses a body over the upload limit: from its Content-Length before reading (and spooling)
    it, or, sent without one, as soon as the bytes received pass the limit."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        is_upload = self.path == "/v1/files" and "POST" in (self.methods or ())

        async def limited(request: Request) -> Response:
            limit_mb = services(request).settings.max_upload_mb
            limit = limit_mb * MIB + FORM_OVERHEAD
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                raise _too_large(limit_mb)
            if is_upload:  # an upload past the key's rate limit is refused before its body is read
                await count_before_body(request, Action.UPLOAD)
            receive = _LimitedReceive(request.receive, limit)
            try:
                return await handler(Request(request.scope, receive))
            except Exception:
                # FastAPI reports a failed form parse as a 400: say what it was.
                if receive.exceeded:
                    raise _too_large(limit_mb) from None
                raise

        return limited


router = APIRouter(prefix="/v1/files", tags=["files"], route_class=UploadLimitRoute)


def file_out(uploaded: UploadedFile) -> FileOut:
    return FileOut.model_validate(uploaded, from_attributes=True)


def _column_map(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise SpecError(
            [Problem("column_map", 'column_map must be a JSON object of column names, e.g. {"question": "prompt"}')]
        )
    return value or None


def _receive(upload: UploadFile, incoming: Path, limit_mb: int) -> None:
    """Copy the upload into the data dir, refusing it once it passes the limit (a body sent without a length)."""
    size = 0
    with incoming.open("wb") as out:
        while chunk := upload.file.read(COPY_CHUNK):
            size += len(chunk)
            if size > limit_mb * MIB:
                raise _too_large(limit_mb)
            out.write(chunk)


@router.post(
    "",
    status_code=201,
    response_model=FileOut,
    responses={413: {"model": ErrorBody}, 422: {"model": ErrorBody}, **RATE_LIMITED_RESPONSE},
    dependencies=[rate_limited(Action.UPLOAD)],
)
def upload_file(
    svc: ServicesDep,
    caller: Writer,
    file: Annotated[UploadFile, File(description="A .jsonl, .json (a list of rows), .csv or .parquet file.")],
    column_map: Annotated[
        str | None,
        Form(description='Columns to rename as the file is read, as JSON: {"question": "prompt"}.'),
    ] = None,
) -> FileOut:
    """Upload a prompt dataset (multipart form: `file`, optional `column_map`).

    Every row is read and checked before anything is kept: a file that does not parse, has no `prompt` column,
    has empty prompts, or mixes text prompts with chat prompts is refused (422) naming the rows; nothing is stored.
    The answer says what was found: rows, columns, `standard` or `conversational` prompts, and a few sample rows.
    """
    renames = _column_map(column_map)
    filename = file.filename or "dataset"
    try:
        files.file_format(filename)
    except UploadRefused as error:
        raise SpecError(error.problems) from None
    settings = svc.settings
    incoming_dir = settings.files_dir / ".incoming"
    incoming_dir.mkdir(parents=True, exist_ok=True)
    incoming = incoming_dir / f"{secrets.token_hex(8)}{Path(filename).suffix.lower()}"
    stored: UploadedFile | None = None
    try:
        _receive(file, incoming, settings.max_upload_mb)
        try:
            report = files.inspect_upload(incoming, filename, renames)
        except UploadRefused as error:
            raise ApiError(422, "invalid_file", f"{filename}: {error}", error.problems) from None
        with svc.database.session() as session:
            stored = files.store_upload(
                session,
                settings.files_dir,
                incoming,
                filename,
                report,
                renames,
                project=caller.project,
                by=caller.key_prefix,
            )
        return file_out(stored)
    except BaseException:
        if stored is not None:  # the bytes moved into place but the row was not committed
            shutil.rmtree(Path(stored.path).parent, ignore_errors=True)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            incoming.unlink()


@router.get("", response_model=FileList)
def list_files(svc: ServicesDep, caller: Reader) -> FileList:
    """Uploaded files of the caller's project, newest first."""
    with svc.database.session() as session:
        return FileList(data=[file_out(f) for f in files.list_files(session, scope(caller))])


@router.get("/{file_id}", response_model=FileOut, responses={404: {"model": ErrorBody}})
def get_file(file_id: str, svc: ServicesDep, caller: Reader) -> FileOut:
    """An uploaded file: what was found in it when it was uploaded."""
    with svc.database.session() as session:
        uploaded = files.get_file(session, file_id, scope(caller))
        if uploaded is None:
            raise not_found(f"file {file_id}")
        return file_out(uploaded)


@router.delete(
    "/{file_id}", response_model=FileDeleted, responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}}
)
def delete_file(file_id: str, svc: ServicesDep, caller: Writer) -> FileDeleted:
    """Delete an uploaded file and its bytes. Refused (409) while a queued, running or paused job uses it."""
    try:
        with svc.database.session() as session:
            folder = files.delete_file(session, file_id, scope(caller), by=caller.key_prefix)
    except FileInUse as error:
        raise ApiError(409, "file_in_use", str(error)) from None
    if folder is None:
        raise not_found(f"file {file_id}")
    shutil.rmtree(folder, ignore_errors=True)  # after the commit: a failed delete keeps its bytes
    return FileDeleted(id=file_id)
