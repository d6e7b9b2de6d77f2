"""Streaming a directory as a tar archive without building it first (checkpoints can be many gigabytes)."""

from __future__ import annotations

import queue
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

CHUNK_BYTES = 1 << 20
# Chunks held between the thread writing the archive and the response reading it: bounds the memory used.
BUFFERED_CHUNKS = 8


class _QueueWriter:
    """A write-only file object whose writes go, in chunks, to a queue."""

    def __init__(self, chunks: queue.Queue[bytes | BaseException | None]) -> None:
        self.chunks = chunks
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        while len(self.buffer) >= CHUNK_BYTES:
            self.chunks.put(bytes(self.buffer[:CHUNK_BYTES]))
            del self.buffer[:CHUNK_BYTES]
        return len(data)

    def close(self) -> None:
        if self.buffer:
            self.chunks.put(bytes(self.buffer))
            self.buffer.clear()


def tar_stream(directory: Path, archive_root: str) -> Iterator[bytes]:
    """The bytes of an uncompressed tar of `directory`, whose entries sit under `archive_root/`."""
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=BUFFERED_CHUNKS)

    def write() -> None:
        writer = _QueueWriter(chunks)
        try:
            with tarfile.open(fileobj=writer, mode="w|") as archive:  # type: ignore[call-overload]
                archive.add(directory, arcname=archive_root)
            writer.close()
            chunks.put(None)
        except BaseException as error:  # the reader re-raises it
            chunks.put(error)

    threading.Thread(target=write, name=f"tar-{archive_root}", daemon=True).start()
    while (chunk := chunks.get()) is not None:
        if isinstance(chunk, BaseException):
            raise chunk
        yield chunk
