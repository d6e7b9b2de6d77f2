"""/v1/files over real HTTP to a real `grpo serve`: uploads in each format, what they report, refusals with row
numbers that store nothing, the size limit, and deletes refused while a job uses the file (SQLite and Postgres)."""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.settings import Settings
from shared.spec.job import JobSpec
from shared.store import files
from shared.store.db import Database
from tests.processes import Service, base_env
from tests.specs import job_spec
from tests.store import new_job

MIB = 2**20
ROWS = [{"prompt": "What is 2+2?", "answer": "4"}, {"prompt": "What is 3+3?", "answer": "6"}]
CHAT_ROWS = [{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]} for r in ROWS]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def parquet(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def upload(service: Service, name: str, content: bytes, **form: str) -> Any:
    return service.http.post("/v1/files", files={"file": (name, content)}, data=form)


def stored_files(service: Service) -> list[str]:
    data_files = Path(service.env["GRPO_DATA_DIR"]) / "files"
    return sorted(p.name for p in data_files.iterdir() if p.name != ".incoming") if data_files.exists() else []


@pytest.mark.parametrize(
    ("name", "content", "prompt_format"),
    [
        ("math.jsonl", jsonl(ROWS), "standard"),
        ("math.json", json.dumps(ROWS).encode(), "standard"),
        ("math.csv", b"prompt,answer\nWhat is 2+2?,4\nWhat is 3+3?,6\n", "standard"),
        ("math.parquet", parquet(ROWS), "standard"),
        ("chat.jsonl", jsonl(CHAT_ROWS), "conversational"),
        ("chat.parquet", parquet(CHAT_ROWS), "conversational"),
    ],
)
def test_an_upload_reports_what_it_holds(api_only: Service, name: str, content: bytes, prompt_format: str) -> None:
    response = upload(api_only, name, content)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("file-") and body["object"] == "file" and body["filename"] == name
    assert (body["rows"], body["bytes"], body["prompt_format"]) == (2, len(content), prompt_format)
    assert body["format"] == Path(name).suffix.lstrip(".")
    assert body["columns"] == ["prompt", "answer"]
    expected = CHAT_ROWS if prompt_format == "conversational" else ROWS
    assert body["sample"] == expected
    assert api_only.http.get(f"/v1/files/{body['id']}").json() == body
    assert api_only.http.get("/v1/files").json()["data"] == [body]
    (folder,) = stored_files(api_only)
    assert (Path(api_only.env["GRPO_DATA_DIR"]) / "files" / folder / name).read_bytes() == content


def test_a_column_map_renames_as_the_file_is_read(api_only: Service) -> None:
    content = jsonl([{"question": "2+2?", "solution": "4"}])
    refused = upload(api_only, "q.jsonl", content)
    assert refused.status_code == 422
    message = refused.json()["error"]["message"]
    assert "there is no 'prompt' column (columns: question, solution)" in message
    assert 'column_map={"question": "prompt"}' in message
    accepted = upload(api_only, "q.jsonl", content, column_map='{"question": "prompt"}')
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["columns"] == ["prompt", "solution"]
    assert accepted.json()["column_map"] == {"question": "prompt"}
    assert accepted.json()["sample"] == [{"prompt": "2+2?", "solution": "4"}]
    bad_map = upload(api_only, "q.jsonl", content, column_map="question->prompt")
    assert bad_map.status_code == 422 and bad_map.json()["error"]["errors"][0]["field"] == "column_map"


@pytest.mark.parametrize(
    ("name", "content", "messages"),
    [
        ("bad.jsonl", b'{"prompt": "ok"}\n{"prompt": "fine"}\n{"prompt": \n', ["not valid JSONL: line 3: "]),
        (
            "empty.jsonl",
            b'{"prompt": "ok"}\n{"prompt": "  "}\n{"prompt": ""}\n',
            ["line 2: the prompt is empty", "line 3"],
        ),
        (
            "mixed.jsonl",
            jsonl([ROWS[0], CHAT_ROWS[1]]),
            ["line 2: a conversational prompt, where line 1 has a standard one: use text prompts or chat prompts"],
        ),
        ("uneven.jsonl", jsonl([ROWS[0], {"prompt": "x"}]), ["line 2: columns ['prompt'] differ from the line 1"]),
        ("list.json", b'{"prompt": "x"}', ["a .json dataset must be a list of rows"]),
        ("rows.csv", b"prompt,answer\nq,1\n,2\n", ["row 2 (line 3): the prompt is empty"]),
        ("nan.jsonl", b'{"prompt": "x", "score": NaN}\n', ["NaN is not a JSON number"]),
        ("none.jsonl", b"\n\n", ["the file has no rows"]),
        ("broken.parquet", b"PAR1 not really", ["not valid PARQUET"]),
        ("notes.txt", b"prompt\n", ["upload a .jsonl, .json, .csv or .parquet file"]),
    ],
)
def test_a_bad_upload_is_refused_with_row_numbers_and_stores_nothing(
    api_only: Service, name: str, content: bytes, messages: list[str]
) -> None:
    response = upload(api_only, name, content)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    for message in messages:
        assert message in error["message"], error
    assert api_only.http.get("/v1/files").json()["data"] == []
    assert stored_files(api_only) == []
    incoming = Path(api_only.env["GRPO_DATA_DIR"]) / "files" / ".incoming"
    assert not incoming.exists() or list(incoming.iterdir()) == []


def test_an_upload_over_the_limit_is_a_413(tmp_path: Path) -> None:
    service = Service(base_env(tmp_path / "data", max_upload_mb="1"), tmp_path)
    try:
        service.start_api("serve")
        big = jsonl([{"prompt": "x" * 1000}] * 1100)  # about 1.1 MB
        response = upload(service, "big.jsonl", big)
        assert response.status_code == 413
        assert "larger than this service takes (1 MiB)" in response.json()["error"]["message"]
        assert "GRPO_MAX_UPLOAD_MB" in response.json()["error"]["message"]
        assert upload(service, "small.jsonl", jsonl(ROWS)).status_code == 201  # the server is fine
        assert len(stored_files(service)) == 1
    finally:
        service.stop()


def chunked_multipart(
    name: str, content: bytes, chunk: int = 64 * 1024, on_chunk: Callable[[], None] = lambda: None
) -> tuple[Iterator[bytes], str]:
    """A multipart body with one `file` part, as a generator (httpx sends it chunked, with no Content-Length);
    `on_chunk` runs before each chunk of the file is sent."""
    boundary = secrets.token_hex(16)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    def parts() -> Iterator[bytes]:
        yield head
        for start in range(0, len(content), chunk):
            on_chunk()
            yield content[start : start + chunk]
        yield f"\r\n--{boundary}--\r\n".encode()

    return parts(), f"multipart/form-data; boundary={boundary}"


def largest_open_file(pid: int) -> int:
    """The size of the largest regular file process `pid` has open (deleted temporary files included)."""
    sizes = [0]
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            info = fd.stat()
            if stat.S_ISREG(info.st_mode):
                sizes.append(info.st_size)
    return max(sizes)


def test_a_chunked_upload_over_the_limit_is_a_413_and_stores_nothing(tmp_path: Path) -> None:
    service = Service(base_env(tmp_path / "data", max_upload_mb="1"), tmp_path)
    try:
        api = service.start_api("serve")
        # About 16 MB (a valid dataset but for its size): more than the socket buffers between the client and the
        # API hold, so that the API has received most of it by the time the last chunk is sent.
        big = jsonl([{"prompt": "x" * 1000}] * 16_000)
        spooled: list[int] = []
        body, content_type = chunked_multipart(
            "big.jsonl", big, on_chunk=lambda: spooled.append(largest_open_file(api.process.pid))
        )
        request = service.http.build_request("POST", "/v1/files", content=body, headers={"content-type": content_type})
        assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
        response = service.http.send(request)
        assert response.status_code == 413, response.text
        assert "larger than this service takes (1 MiB)" in response.json()["error"]["message"]
        # The API stopped keeping the body once it passed the limit: it never held much more than 1 MiB of it.
        assert max(spooled) < 2 * MIB, max(spooled)
        assert service.http.get("/v1/files").json()["data"] == []
        assert stored_files(service) == []
        incoming = Path(service.env["GRPO_DATA_DIR"]) / "files" / ".incoming"
        assert not incoming.exists() or list(incoming.iterdir()) == []
        # The same way of sending works for a file under the limit: the 413 was the size, not the chunking.
        body, content_type = chunked_multipart("small.jsonl", jsonl(ROWS))
        small = service.http.post("/v1/files", content=body, headers={"content-type": content_type})
        assert small.status_code == 201, small.text
        assert small.json()["rows"] == 2 and len(stored_files(service)) == 1
    finally:
        service.stop()


def test_a_job_names_an_uploaded_file_and_the_file_cannot_be_deleted_while_it_waits(api_only: Service) -> None:
    file_id = upload(api_only, "math.jsonl", jsonl(ROWS)).json()["id"]
    spec = job_spec("/models/tiny", train_dataset={"file_id": file_id})
    spec["reward_funcs"].append({"type": "builtin", "name": "accuracy", "params": {"column": "solution"}})
    refused = api_only.http.post("/v1/jobs", json=spec)
    assert refused.status_code == 422
    assert "accuracy needs the dataset column(s) solution, but train_dataset has answer, prompt" in refused.text
    spec["reward_funcs"][-1]["params"]["column"] = "answer"
    job = api_only.submit(spec)  # no worker: it stays queued

    in_use = api_only.http.delete(f"/v1/files/{file_id}")
    assert in_use.status_code == 409
    assert f"used by job(s) {job['id']}" in in_use.json()["error"]["message"]
    assert api_only.http.get(f"/v1/files/{file_id}").status_code == 200
    assert api_only.http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    deleted = api_only.http.delete(f"/v1/files/{file_id}")
    assert deleted.json() == {"id": file_id, "object": "file", "deleted": True}
    assert stored_files(api_only) == []
    assert api_only.http.get(f"/v1/files/{file_id}").status_code == 404
    gone = api_only.http.post("/v1/jobs", json=spec)
    assert gone.status_code == 422
    assert f"train_dataset.file_id '{file_id}' is not an uploaded file" in gone.text


def test_jobs_using_a_file_are_found_in_both_databases(database: Database, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    incoming = tmp_path / "in.jsonl"
    incoming.write_bytes(jsonl(ROWS))
    report = files.inspect_upload(incoming, "in.jsonl", None)
    with database.session() as session:
        stored = files.store_upload(session, settings.files_dir, incoming, "in.jsonl", report, None)
    spec = JobSpec.model_validate(job_spec("m", eval_dataset={"file_id": stored.id}))
    job_id = new_job(database, spec)
    with database.session() as session:
        assert files.jobs_using(session, stored.id) == [job_id]
        assert files.file_columns(session, [stored.id, "file-none"], lock=True) == {stored.id: ["prompt", "answer"]}
        with pytest.raises(files.FileInUse):
            files.delete_file(session, stored.id)
