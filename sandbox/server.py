"""The program inside a reward sandbox: `python -I -B -m sandbox.server`.

It is started with an empty environment in its own scratch directory. Before it runs any user code it limits its
memory (RLIMIT_AS), drops the network where the kernel lets it (a network namespace), has the kernel confine it
(`confinement.py`: Landlock and seccomp, for files, network and processes), and installs an audit hook that says
the same rules in words a reward's author can act on. Then it compiles the users' reward, tool and environment
sources and answers calls, one JSON line in and one out: rewards, tool calls, and environment instances created
and called (reset, tools, get_reward) by handle. Instances live as long as the process: TRL reuses them.

Only the standard library, this file and (when the sandbox also hosts built-in rewards, as the API's preview asks)
`sandbox.builtin` run before the hook: nothing the service knows (settings, database, secrets) is in this
process.
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import json
import linecache
import math
import numbers
import os
import resource
import signal
import socket
import sys
import traceback
from dataclasses import asdict
from types import SimpleNamespace
from typing import Any

from sandbox.confinement import Confinement, confine, readable_roots

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
NO_NETWORK = "sandboxed code (rewards, tools, environments) has no network access"
NO_PROCESSES = "sandboxed code (rewards, tools, environments) may not start or signal processes"
NO_CTYPES = "sandboxed code (rewards, tools, environments) may not load native code with ctypes"
# Audit events a reward function has no business raising, and what it is told.
FORBIDDEN_EVENTS = {
    "socket.getaddrinfo": NO_NETWORK,
    "socket.gethostbyname": NO_NETWORK,
    # Not even a Unix socket in the scratch directory: a path there can be a link to a listener elsewhere, and
    # nothing a reward needs connects or binds (asyncio's self-pipe is a pair, connected from birth).
    "socket.connect": NO_NETWORK,
    "socket.bind": NO_NETWORK,
    "socket.sendto": NO_NETWORK,
    "subprocess.Popen": NO_PROCESSES,
    "os.system": NO_PROCESSES,
    "os.exec": NO_PROCESSES,
    "os.posix_spawn": NO_PROCESSES,
    "os.spawn": NO_PROCESSES,
    "os.fork": NO_PROCESSES,
    "os.forkpty": NO_PROCESSES,
    "os.kill": NO_PROCESSES,
    "os.killpg": NO_PROCESSES,
    "ctypes.dlopen": NO_CTYPES,
    "ctypes.dlsym": NO_CTYPES,
    "ctypes.cdata": NO_CTYPES,
}
FILE_EVENTS = {
    "os.listdir",
    "os.scandir",
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.chmod",
    "os.chown",
    "os.symlink",
    "os.link",
    "os.truncate",
    "os.utime",
    "shutil.rmtree",
    "shutil.copyfile",
    "shutil.move",
    "os.chdir",
}
# The most of a tool's result the trainer gets (and appends to the conversation).
MAX_RESULT_CHARS = 64 * 1024
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class SandboxViolation(PermissionError):
    """Something a reward function may not do."""


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def package_dirs() -> list[str]:
    """The service's own code directories (built-in rewards import lazily from them)."""
    sandbox_dir = os.path.dirname(os.path.abspath(__file__))
    return [sandbox_dir, os.path.join(os.path.dirname(sandbox_dir), "shared")]


def install_limits(scratch: str, memory_mb: int, parent: int) -> Confinement:
    """Memory, core dumps, file sizes, death with its parent, no network namespace where the kernel allows it,
    then the kernel's confinement (files, network, processes)."""
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**30, 2**30))
    libc = ctypes.CDLL(None, use_errno=True)
    # Die with the process that started it (the training process), even in the middle of a user's endless loop.
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)  # it is already gone
    # An empty network namespace: needs root or unprivileged user namespaces; the audit hook does the rest.
    libc.unshare(CLONE_NEWNET)
    os.chdir(scratch)
    return confine(scratch, package_dirs())


def install_audit_hook(scratch: str) -> None:
    """Refuse the network, processes, ctypes, and files outside `scratch` and the Python installation."""
    scratch_root = os.path.realpath(scratch)
    readable = [*readable_roots(package_dirs()), scratch_root]

    def refuse(message: str) -> None:
        raise SandboxViolation(message)

    def check_path(path: Any, writing: bool) -> None:
        if isinstance(path, int) or path is None:
            return
        real = os.path.realpath(os.fsdecode(path))
        allowed = [scratch_root] if writing else readable
        if not _inside(real, allowed):
            raise SandboxViolation(
                f"sandboxed code may not {'write' if writing else 'read'} {os.fsdecode(path)}: only files in "
                "its scratch directory (the current directory)"
            )

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in FORBIDDEN_EVENTS:
            refuse(FORBIDDEN_EVENTS[event])
        elif event == "socket.__new__" and args[1] != socket.AF_UNIX:
            # Local socket pairs are how asyncio wakes itself; anything else reaches a network.
            refuse(NO_NETWORK)
        elif event == "open":
            path, mode, flags = [*args, None, None, 0][:3]
            writing = bool(mode and any(c in str(mode) for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
            check_path(path, writing)
        elif event in FILE_EVENTS:
            check_path(args[0] if args else None, writing=event not in ("os.listdir", "os.scandir"))

    sys.addaudithook(hook)


def _run_source(entry: dict[str, Any], kind: str) -> dict[str, Any]:
    """Run a user's source as a module of its own; its namespace. Tracebacks name it by its place in the spec."""
    filename = f"<{entry['path']}>"
    linecache.cache[filename] = (len(entry["source"]), None, entry["source"].splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"__name__": f"grpo_{kind}_{entry['name']}", "__builtins__": __builtins__}
    exec(compile(entry["source"], filename, "exec"), namespace)
    return namespace


def _defined(namespace: dict[str, Any], name: str, what: str) -> Any:
    value = namespace.get(name)
    if not callable(value):
        raise NameError(f"the source does not define a callable {what} {name!r}")
    return value


def _compile(sources: list[dict[str, Any]], build_builtin: Any) -> dict[str, Any]:
    functions: dict[str, Any] = {}
    for entry in sources:
        if "builtin" in entry:
            functions[entry["name"]] = build_builtin(entry["builtin"])
            continue
        functions[entry["name"]] = _defined(_run_source(entry, "reward"), entry["function"], "function")
    return functions


class Agents:
    """The tools and environments of a job, hosted here: tools by name, environment instances by handle."""

    def __init__(self, tools: list[dict[str, Any]], environments: list[dict[str, Any]]) -> None:
        self.tools: dict[str, Any] = {}
        for entry in tools:
            namespace = _run_source(entry, "tool")
            for name in entry["functions"]:
                self.tools[name] = _defined(namespace, name, "tool function")
        self.classes = {
            entry["name"]: _defined(_run_source(entry, "environment"), entry["class"], "environment class")
            for entry in environments
        }
        self.instances: dict[int, Any] = {}
        # What ran here, by tool (or environment method): calls, and those that raised.
        self.calls: dict[str, int] = {}
        self.failures: dict[str, int] = {}

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        kind = request["kind"]
        if kind == "tool":
            return self._counted(request["name"], self.tools[request["name"]], request["arguments"])
        if kind == "env_new":
            # The request's id: unique for the client's whole life, so a handle from before a restart never
            # names a new instance.
            self.instances[request["id"]] = self.classes[request["environment"]]()
            return {"handle": request["id"]}
        if kind == "env_call":
            instance = self.instances.get(request["handle"])
            if instance is None:
                raise LookupError("the environment is gone (its sandbox was restarted after a call ran too long)")
            method = request["method"]
            if method in ("reset", "get_reward"):
                return {"value": _resolved(getattr(instance, method)(**request["arguments"]))}
            return self._counted(method, getattr(instance, method), request["arguments"])
        if kind == "stats":
            return {"calls": self.calls, "failures": self.failures}
        raise ValueError(f"unknown request kind {kind!r}")

    def _counted(self, name: str, function: Any, arguments: dict[str, Any]) -> dict[str, Any]:
        self.calls[name] = self.calls.get(name, 0) + 1
        try:
            result = _resolved(function(**arguments))
        except BaseException:
            self.failures[name] = self.failures.get(name, 0) + 1
            raise
        if isinstance(result, list):
            try:
                if len(json.dumps(result)) <= MAX_RESULT_CHARS:
                    return {"content": result}
            except (TypeError, ValueError):
                pass
        text = str(result)
        if len(text) > MAX_RESULT_CHARS:
            # What the model reads next, and what the trainer parses: never unbounded.
            text = text[:MAX_RESULT_CHARS] + f"[... {len(text) - MAX_RESULT_CHARS} more characters cut]"
        return {"text": text}

    def environments_of(self, handles: list[int | None]) -> list[Any]:
        """The instances a reward function gets as `environments` (TRL passes one per completion)."""
        return [None if handle is None else self.instances.get(handle) for handle in handles]


def _resolved(value: Any) -> Any:
    return asyncio.run(value) if inspect.isawaitable(value) else value  # type: ignore[arg-type]


# Where the users' sources are, in tracebacks: the spec fields they came from.
USER_SOURCES = ("<reward_funcs[", "<tools[", "<environment_factory")


def _describe(error: BaseException, limit_mb: int) -> dict[str, Any]:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith(USER_SOURCES)]
    where = ""
    if frames:
        frame = frames[-1]
        code = f": {frame.line.strip()}" if frame.line else ""
        where = f" ({frame.filename.strip('<>')} line {frame.lineno}{code})"
    message = str(error)
    if isinstance(error, MemoryError):
        message = f"out of memory (the sandbox allows {limit_mb} MiB)"
    return {
        "type": type(error).__name__,
        "message": message,
        "where": where,
        "traceback": "".join(traceback.format_exception(error)),
    }


def _check(values: Any, expected: int) -> list[float | None]:
    """One finite number (or None, TRL's 'leave it out') per completion, as JSON carries them."""
    if not isinstance(values, list | tuple):
        raise TypeError(f"returned {type(values).__name__}, not a list: return one float per completion")
    if len(values) != expected:
        raise ValueError(f"returned {len(values)} value(s) for {expected} completion(s): return one per completion")
    checked: list[float | None] = []
    for index, value in enumerate(values):
        if value is None:
            checked.append(None)
        elif isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise TypeError(f"returned {value!r} at index {index}: rewards must be finite numbers (or None)")
        else:
            checked.append(float(value))
    return checked


class _BadResult(Exception):
    """The function returned, but not a usable list of rewards."""


def call(function: Any, request: dict[str, Any], agents: Agents | None = None) -> dict[str, Any]:
    """Call a reward function as TRL does; the rewards, and what it asked to log."""
    metrics: list[tuple[str, float]] = []
    extras: list[tuple[str, list[Any]]] = []
    kwargs = dict(request["kwargs"])
    if agents is not None and isinstance(kwargs.get("environments"), list):
        kwargs["environments"] = agents.environments_of(kwargs["environments"])
    state = kwargs.pop("trainer_state", None)
    kwargs["trainer_state"] = SimpleNamespace(**state) if isinstance(state, dict) else state
    kwargs["log_metric"] = lambda name, value: metrics.append((str(name), float(value)))
    kwargs["log_extra"] = lambda column, values: extras.append((str(column), list(values)))
    result = _resolved(function(**kwargs))
    try:
        rewards = _check(result, len(kwargs["completions"]))
    except (TypeError, ValueError) as error:
        raise _BadResult(str(error)) from None
    return {"rewards": rewards, "metrics": metrics, "extras": extras}


def main() -> None:
    protocol_in = sys.stdin
    protocol_out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what user code prints goes to the log, not into the protocol
    for stream in (sys.stdout, sys.stderr):  # printed lines reach the log even when the sandbox is killed
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    setup = json.loads(protocol_in.readline())
    build_builtin: Any = None
    if any("builtin" in entry for entry in setup["sources"]):
        # The service's own built-ins (the API's preview runs them here too); imported before the hook, as trusted.
        from sandbox import builtin

        build_builtin = builtin.build_builtin_from_json
    confinement = install_limits(setup["scratch"], setup["memory_mb"], setup["parent"])
    install_audit_hook(setup["scratch"])
    if setup.get("require_kernel") and not confinement.complete:
        refusal = {"type": "SandboxUnavailable", "message": confinement.describe(), "where": "", "traceback": ""}
        protocol_out.write(json.dumps({"ready": False, "error": refusal, "confinement": asdict(confinement)}) + "\n")
        return
    try:
        functions = _compile(setup["sources"], build_builtin)
        agents = Agents(setup.get("tools", []), setup.get("environments", []))
    except BaseException as error:
        answer = {"ready": False, "error": _describe(error, setup["memory_mb"]), "confinement": asdict(confinement)}
        protocol_out.write(json.dumps(answer) + "\n")
        return
    protocol_out.write(json.dumps({"ready": True, "confinement": asdict(confinement)}) + "\n")
    for line in protocol_in:
        request = json.loads(line)
        try:
            if "kind" in request:
                answer = {"id": request["id"], **agents.answer(request)}
            else:
                answer = {"id": request["id"], **call(functions[request["reward"]], request, agents)}
        except _BadResult as error:
            answer = {"id": request["id"], "bad_result": str(error)}
        except BaseException as error:
            answer = {"id": request["id"], "error": _describe(error, setup["memory_mb"])}
        sys.stdout.flush()
        sys.stderr.flush()
        protocol_out.write(json.dumps(answer, default=repr) + "\n")


if __name__ == "__main__":
    main()
