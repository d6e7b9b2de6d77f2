"""Streaming a directory as a tar archive without building it first (checkpoints can be many gigabytes)."""

from __future__ import annotations

import contextlib
import queue
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

CHUNK_BYTES = 1 << 20
# Chunks held between the thread writing the archive and the response reading it: bounds the memory used.
BUFFERED_CHUNKS = 8


class _Abandoned(Exception):
    """The client stopped reading: the archive's thread stops writing."""


class _QueueWriter:
    """A write-only file object whose writes go, in chunks, to `put`."""

    def __init__(self, put: Callable[[bytes], None]) -> None:
        self.put = put
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        while len(self.buffer) >= CHUNK_BYTES:
            self.put(bytes(self.buffer[:CHUNK_BYTES]))
            del self.buffer[:CHUNK_BYTES]
        return len(data)

    def close(self) -> None:
        if self.buffer:
            self.put(bytes(self.buffer))
            self.buffer.clear()


def tar_stream(directory: Path, archive_root: str) -> Iterator[bytes]:
    """The bytes of an uncompressed tar of `directory`, whose entries sit under `archive_root/`.

    A thread writes the archive into a small queue while the response reads it. When the client goes away, the
    response closes this generator, which tells the thread to stop; nothing is left behind.
    """
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=BUFFERED_CHUNKS)
    abandoned = threading.Event()

    def put(item: bytes | BaseException | None) -> None:
        while not abandoned.is_set():
            try:
                chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _Abandoned

    def write() -> None:
        writer = _QueueWriter(put)
        try:
            with tarfile.open(fileobj=writer, mode="w|") as archive:  # type: ignore[call-overload]
                archive.add(directory, arcname=archive_root)
            writer.close()
            put(None)
        except _Abandoned:
            pass
        except BaseException as error:  # the reader re-raises it
            with contextlib.suppress(_Abandoned):
                put(error)

    thread = threading.Thread(target=write, name=f"tar-{archive_root}", daemon=True)
    thread.start()
    try:
        while (chunk := chunks.get()) is not None:
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk
    finally:
        abandoned.set()
        thread.join(timeout=5)
