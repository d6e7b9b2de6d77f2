"""The reward sandbox and Unix sockets: Landlock (to ABI 7) does not govern connecting to a pathname Unix socket, so
with the audit hook switched off only the seccomp filter stands between a reward and every listener on the worker.
Tried against the real PostgreSQL server's own socket (trust-authenticated: a session there is the whole database)
and a real listener in a directory outside the sandbox."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.sandboxing import HOOK_OFF, TRIED, confined_sandbox
from tests.services import libpq_url

pytestmark = pytest.mark.postgres

ATTEMPTS = """
import asyncio, socket
def escape(completions, log_metric, **kwargs):
    switch_the_audit_hook_off()
    def attempt(name, action):
        tried(log_metric, name, action)
    def connect(path):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # refused here by the kernel, or else:
        client.settimeout(2)
        client.connect(path)
        client.sendall(b"hello")
    attempt("postgres_socket", lambda: connect(POSTGRES_SOCKET))
    attempt("outside_listener", lambda: connect(LISTENER))
    attempt("datagram_to_listener", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"x", LISTENER))
    attempt("bind_in_scratch", lambda: socket.socket(socket.AF_UNIX).bind("mine.sock"))
    def pair():
        left, right = socket.socketpair()
        left.sendall(b"ping")
        assert right.recv(4) == b"ping"
    attempt("socketpair", pair)
    async def sleep_a_little():
        await asyncio.sleep(0.01)
        return 1.0
    attempt("asyncio_loop", lambda: asyncio.run(sleep_a_little()))
    give_the_server_its_isinstance_back()
    return [0.0 for _ in completions]
"""


def postgres_socket(admin_url: str) -> str:
    """The path of the running test server's own Unix socket, as the server itself reports it."""
    with psycopg.connect(libpq_url(admin_url)) as connection:
        directories = str(connection.execute("SHOW unix_socket_directories").fetchone()[0])  # type: ignore[index]
        port = connection.execute("SHOW port").fetchone()[0]  # type: ignore[index]
    directory = next(d.strip() for d in directories.split(",") if d.strip() and not d.strip().startswith("@"))
    path = Path(directory) / f".s.PGSQL.{port}"
    assert path.is_socket(), f"the server says its socket is {path}, which is not there"
    return str(path)


@pytest.fixture
def outside_listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A Unix stream socket listening in a directory beside (not inside) the sandbox's scratch."""
    path = tmp_path / "outside" / "listener.sock"
    path.parent.mkdir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    listener.setblocking(False)
    yield str(path), listener
    listener.close()


def test_with_the_audit_hook_off_a_reward_reaches_no_unix_socket_but_keeps_socket_pairs(
    tmp_path: Path, postgres_server: str, outside_listener: tuple[str, socket.socket]
) -> None:
    listener_path, listener = outside_listener
    pg_socket = postgres_socket(postgres_server)
    # The socket is reachable from outside the sandbox: the refusal below is the sandbox's doing.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.connect(pg_socket)
    constants = f"POSTGRES_SOCKET = {pg_socket!r}\nLISTENER = {listener_path!r}\n"
    sandbox = confined_sandbox(constants + HOOK_OFF + TRIED + ATTEMPTS, tmp_path / "scratch")
    sandbox.start()
    try:
        result = sandbox.call("escape", {"completions": ["a"], "prompts": [None]})
    finally:
        sandbox.close()

    assert dict(result.metrics) == {
        "postgres_socket": 0.0,
        "outside_listener": 0.0,
        "datagram_to_listener": 0.0,
        "bind_in_scratch": 0.0,
        "socketpair": 1.0,
        "asyncio_loop": 1.0,
    }
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected
    assert not (tmp_path / "scratch" / "mine.sock").exists()


def test_an_async_reward_still_runs_in_the_sandbox(tmp_path: Path) -> None:
    source = (
        "import asyncio\n"
        "async def escape(completions, **kwargs):\n"
        "    await asyncio.sleep(0.01)\n"
        "    return [float(len(c)) for c in completions]\n"
    )
    sandbox = confined_sandbox(source, tmp_path)
    sandbox.start()
    try:
        assert sandbox.call("escape", {"completions": ["ab", "c"], "prompts": [None, None]}).rewards == [2.0, 1.0]
    finally:
        sandbox.close()
