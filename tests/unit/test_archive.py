"""Checkpoint downloads: a streamed tar that is complete when read through, and leaves nothing behind when the
client goes away mid-way."""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
from pathlib import Path

from api.archive import BUFFERED_CHUNKS, CHUNK_BYTES, tar_stream


def checkpoint_dir(tmp_path: Path, megabytes: int) -> Path:
    folder = tmp_path / "checkpoint-10"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(os.urandom(megabytes * 2**20))
    (folder / "config.json").write_text('{"model_type": "qwen2"}')
    return folder


def tar_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tar-")]


def test_the_stream_is_the_whole_directory(tmp_path: Path) -> None:
    folder = checkpoint_dir(tmp_path, 3)
    data = b"".join(tar_stream(folder, "job-x-checkpoint-10"))
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert sorted(archive.getnames()) == [
            "job-x-checkpoint-10",
            "job-x-checkpoint-10/config.json",
            "job-x-checkpoint-10/model.safetensors",
        ]
        member = archive.extractfile("job-x-checkpoint-10/model.safetensors")
        assert member is not None and member.read() == (folder / "model.safetensors").read_bytes()


def test_a_client_that_goes_away_leaves_no_thread_or_buffer_behind(tmp_path: Path) -> None:
    # Far more than the chunks the queue holds: the writing thread blocks until the reader goes away.
    folder = checkpoint_dir(tmp_path, (BUFFERED_CHUNKS + 8) * CHUNK_BYTES // 2**20)
    before = len(tar_threads())
    for _ in range(5):
        stream = tar_stream(folder, "job-x-checkpoint-10")
        next(stream)
        assert len(tar_threads()) == before + 1
        stream.close()  # what the response does when the client disconnects
    deadline = time.monotonic() + 5
    while len(tar_threads()) > before:
        assert time.monotonic() < deadline, [t.name for t in tar_threads()]
        time.sleep(0.05)
