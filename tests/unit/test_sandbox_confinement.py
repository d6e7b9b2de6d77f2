"""The kernel's confinement of the reward sandbox (Landlock, seccomp), proved against a reward that first switches
the in-interpreter audit hook off, as a determined author can: with the hook gone, the kernel still refuses the
files, the network and the processes. Real sandbox processes, real sockets."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.client import RewardCallFailed
from tests.sandboxing import HOOK_OFF, TRIED, confined_sandbox

ATTEMPTS = """
import ctypes, os, socket
def escape(completions, log_metric, **kwargs):
    switch_the_audit_hook_off()
    def attempt(name, action):
        tried(log_metric, name, action)
    attempt("hook_is_off", lambda: ctypes.CDLL(None).getpid())  # the hook refuses ctypes; the kernel does not
    attempt("read_parent_environment", lambda: open(f"/proc/{os.getppid()}/environ", "rb").read())
    attempt("read_outside_file", lambda: open(SECRET).read())
    attempt("list_outside_dir", lambda: os.listdir(os.path.dirname(SECRET)))
    attempt("write_outside", lambda: open(OUTSIDE_WRITE, "w").write("x"))
    attempt("tcp_connect", lambda: socket.create_connection(("127.0.0.1", TCP_PORT), timeout=2))
    attempt("udp_send", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", UDP_PORT)))
    attempt("run_program", lambda: __import__("subprocess").run(["/bin/true"]))
    attempt("fork", lambda: os.fork() == 0 and os._exit(0))
    attempt("signal_parent", lambda: os.kill(os.getppid(), 0))
    attempt("write_scratch", lambda: open("mine.txt", "w").write("fine"))
    give_the_server_its_isinstance_back()
    return [0.0 for _ in completions]
"""


@pytest.fixture
def listeners() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A TCP server and a UDP socket on loopback that a confined reward must not reach."""
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    for listener in (tcp, udp):
        listener.setblocking(False)
    yield tcp, udp
    tcp.close()
    udp.close()


def test_with_the_audit_hook_switched_off_the_kernel_still_refuses_files_network_and_processes(
    tmp_path: Path, listeners: tuple[socket.socket, socket.socket]
) -> None:
    tcp, udp = listeners
    secret = tmp_path / "data" / "grpo.sqlite"  # stands where the embedded database would: beside the job dirs
    secret.parent.mkdir()
    secret.write_text("other users' jobs")
    outside = tmp_path / "outside.txt"
    constants = (
        f"SECRET = {str(secret)!r}\nOUTSIDE_WRITE = {str(outside)!r}\n"
        f"TCP_PORT = {tcp.getsockname()[1]}\nUDP_PORT = {udp.getsockname()[1]}\n"
    )
    sandbox = confined_sandbox(constants + HOOK_OFF + TRIED + ATTEMPTS, tmp_path / "scratch")
    sandbox.start()
    try:
        result = sandbox.call("escape", {"completions": ["a"], "prompts": [None]})
    finally:
        sandbox.close()

    outcomes = dict(result.metrics)
    assert outcomes.pop("hook_is_off") == 1.0, "the escape did not switch the audit hook off: the test proves nothing"
    assert outcomes.pop("write_scratch") == 1.0
    assert outcomes == {
        "read_parent_environment": 0.0,
        "read_outside_file": 0.0,
        "list_outside_dir": 0.0,
        "write_outside": 0.0,
        "tcp_connect": 0.0,
        "udp_send": 0.0,
        "run_program": 0.0,
        "fork": 0.0,
        "signal_parent": 0.0,
    }
    assert not outside.exists()
    assert (tmp_path / "scratch" / "mine.txt").read_text() == "fine"
    with pytest.raises(BlockingIOError):
        tcp.accept()  # nobody connected
    with pytest.raises(BlockingIOError):
        udp.recv(16)  # nothing arrived


def test_the_sandbox_reports_what_the_kernel_enforces(tmp_path: Path) -> None:
    sandbox = confined_sandbox("def escape(completions, **kwargs):\n    return [1.0 for _ in completions]\n", tmp_path)
    sandbox.start()
    sandbox.close()
    confinement = sandbox.confinement
    assert confinement is not None
    # This machine and CI run Linux 6.x with Landlock: a kernel without it would leave user code confined only by
    # the audit hook, which the test above switches off.
    assert confinement.landlock_abi >= 6, f"this kernel cannot confine reward code fully: {confinement.describe()}"
    assert confinement.complete, confinement.describe()
    assert "Landlock" in confinement.describe() and "seccomp" in confinement.describe()


def test_requiring_the_kernel_sandbox_runs_rewards_where_the_kernel_offers_it(tmp_path: Path) -> None:
    sandbox = confined_sandbox(
        "def escape(completions, **kwargs):\n    return [2.0 for _ in completions]\n", tmp_path, require_kernel=True
    )
    sandbox.start()
    try:
        assert sandbox.call("escape", {"completions": ["a", "b"], "prompts": [None, None]}).rewards == [2.0, 2.0]
    finally:
        sandbox.close()


def test_threads_and_native_imports_still_work_inside(tmp_path: Path) -> None:
    source = (
        "import threading, decimal\n"
        "def escape(completions, **kwargs):\n"
        "    import numpy\n"
        "    box = []\n"
        "    worker = threading.Thread(target=lambda: box.append(float(numpy.ones(3).sum())))\n"
        "    worker.start(); worker.join()\n"
        "    return [box[0] + float(decimal.Decimal('0.5')) for _ in completions]\n"
    )
    sandbox = confined_sandbox(source, tmp_path)
    sandbox.start()
    try:
        assert sandbox.call("escape", {"completions": ["a"], "prompts": [None]}).rewards == [3.5]
    finally:
        sandbox.close()


def test_a_reward_that_forks_gets_an_error_not_a_stray_process(tmp_path: Path) -> None:
    source = HOOK_OFF + (
        "import os\n"
        "def escape(completions, **kwargs):\n"
        "    switch_the_audit_hook_off()\n"
        "    give_the_server_its_isinstance_back()\n"
        "    os.fork()\n"
        "    return [0.0 for _ in completions]\n"
    )
    sandbox = confined_sandbox(source, tmp_path)
    sandbox.start()
    try:
        with pytest.raises(RewardCallFailed, match="PermissionError"):
            sandbox.call("escape", {"completions": ["a"], "prompts": [None]})
    finally:
        sandbox.close()
