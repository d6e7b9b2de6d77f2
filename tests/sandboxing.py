"""Helpers for tests of the reward sandbox's confinement: a reward that switches the in-interpreter audit hook off
(so that only the kernel's rules stand), and a sandbox of one reward."""

from __future__ import annotations

from pathlib import Path

from sandbox.client import Sandbox, SandboxLimits

# Neutralises every check of `install_audit_hook` (sandbox/server.py) by changing the globals it reads (they live in the
# sandbox's own `__main__`, which a reward can reach): what is left is the kernel.
HOOK_OFF = """
import sys, types
class MatchesAnything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
def switch_the_audit_hook_off():
    server = sys.modules["__main__"]
    server.FORBIDDEN_EVENTS.clear()
    server.FILE_EVENTS.clear()
    server._inside = lambda *args: True
    server.isinstance = lambda *args: True
    server.socket = types.SimpleNamespace(AF_UNIX=MatchesAnything())  # every family passes its check

def give_the_server_its_isinstance_back():  # it checks the rewards with it
    del sys.modules["__main__"].isinstance
"""

# What an escape attempt inside the sandbox reports: metric `name` 1.0 when `action` worked, 0.0 when it was refused.
TRIED = """
def tried(log_metric, name, action):
    try:
        action()
    except OSError as error:
        print(name, "refused:", error)
        log_metric(name, 0.0)
    else:
        log_metric(name, 1.0)
"""


def confined_sandbox(source: str, scratch: Path, **limits: object) -> Sandbox:
    """A sandbox of one reward, `escape`, with the service's limits (30 s, 1 GiB) unless told otherwise."""
    entry = {"name": "escape", "path": "reward_funcs[0]", "function": "escape", "source": source}
    return Sandbox([entry], scratch, SandboxLimits(30, 1024, **limits))  # type: ignore[arg-type]
