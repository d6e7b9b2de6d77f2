"""The kernel's part of the reward sandbox: Landlock and seccomp, applied to the sandbox process before user code.

The audit hook in `sandbox_server.py` gives a reward function readable errors, but it lives inside the interpreter
that runs the user's code, which can find and change it. These rules live in the kernel and cannot be lifted by
the process they bind:
- Landlock (Linux 5.13+, unprivileged): files are readable only under the Python installation and the system
  libraries, writable only in the scratch directory, and nothing can be executed; from ABI 4, no TCP connect or
  bind; from ABI 6, no signals to, and no abstract Unix sockets of, processes outside the sandbox. A Landlock
  domain also forbids ptrace of any process outside it.
- seccomp (libseccomp, through pyseccomp): no new sockets at all, only connected pairs of local ones (socketpair,
  asyncio's self-pipe), and no connect, bind or listen: Landlock (to ABI 7) does not govern connecting to a
  pathname Unix socket, so without this a reward could reach any listener on the worker (PostgreSQL's socket, a
  Docker socket). Also no execve, no new processes (threads only), no ptrace or reading another process's
  memory, no io_uring (whose operations would bypass the socket rules).
Each layer is applied where the kernel offers it; `Confinement` says what was, so that a job's events and the
preview can tell a user, and an operator can require it (GRPO_REWARD_REQUIRE_KERNEL_SANDBOX).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import sysconfig
from dataclasses import dataclass, field

# Landlock's system calls have the same numbers on every architecture (they were added after the tables merged).
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38
CLONE_THREAD = 0x00010000

# Filesystem rights (include/uapi/linux/landlock.h), by the ABI that introduced them.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
# The rights that apply to a file (the others only to directories).
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ_RIGHTS = READ_FILE | READ_DIR
SCRATCH_RIGHTS = (
    (WRITE_FILE | READ_FILE | READ_DIR | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO)
    | MAKE_SYM
    | REFER
    | TRUNCATE
)
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

# What a Python process needs to read to import modules and their native libraries, beyond the interpreter's
# own directories; nothing here belongs to the service.
SYSTEM_READABLE = (
    "/usr/lib",
    "/usr/lib64",
    "/lib",
    "/lib64",
    "/usr/local/lib",
    "/etc/ld.so.cache",
    "/usr/share/zoneinfo",
    "/etc/localtime",
    "/dev/null",
    "/dev/urandom",
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@dataclass
class Confinement:
    """What the kernel enforces on this sandbox; empty lists where a layer was not available, and why."""

    landlock_abi: int = 0
    enforced: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Files, network and processes are all enforced by the kernel."""
        return not self.missing

    def describe(self) -> str:
        enforced = "; ".join(self.enforced) or "nothing"
        missing = f"; not available here: {'; '.join(self.missing)}" if self.missing else ""
        return f"the kernel enforces {enforced}{missing}"


def readable_roots(package_dirs: list[str]) -> list[str]:
    """The directories and files a sandbox may read: the interpreter, its packages, the project's code (only its
    package directories: an editable install's project root may hold the data dir) and system libraries."""
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= {os.path.join(paths["stdlib"], "lib-dynload"), *package_dirs, *SYSTEM_READABLE}
    return sorted({os.path.realpath(p) for p in roots if os.path.exists(p)})


def _landlock_abi(libc: ctypes.CDLL) -> int:
    abi = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), LANDLOCK_CREATE_RULESET_VERSION)
    return max(int(abi), 0)


def _add_path(libc: ctypes.CDLL, ruleset: int, path: str, rights: int, handled: int) -> None:
    if not os.path.isdir(path):
        rights &= FILE_RIGHTS
    rights &= handled
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        if libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"landlock_add_rule({path}): {os.strerror(code)}")
    finally:
        os.close(fd)


def apply_landlock(scratch: str, readable: list[str], confinement: Confinement) -> None:
    """Restrict this process (and anything it could start) with Landlock, as far as the kernel's ABI goes."""
    libc = ctypes.CDLL(None, use_errno=True)
    abi = _landlock_abi(libc)
    confinement.landlock_abi = abi
    if abi < 1:
        confinement.missing.append("Landlock (files, TCP, signals): the kernel lacks it or it is disabled")
        return
    handled_fs = FS_RIGHTS_BY_ABI[min(abi, 5)]
    attr = _RulesetAttr(handled_access_fs=handled_fs)
    size = 8
    if abi >= 4:
        attr.handled_access_net, size = NET_BIND_TCP | NET_CONNECT_TCP, 16
    if abi >= 6:
        attr.scoped, size = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL, 24
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if ruleset < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"landlock_create_ruleset: {os.strerror(code)}")
    try:
        for path in readable:
            _add_path(libc, ruleset, path, READ_RIGHTS, handled_fs)
        _add_path(libc, ruleset, os.path.realpath(scratch), SCRATCH_RIGHTS, handled_fs)
        if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"landlock_restrict_self: {os.strerror(code)}")
    finally:
        os.close(ruleset)
    confinement.enforced.append(f"Landlock ABI {abi}: files (read-only installation, writable scratch, no exec)")
    if abi >= 4:
        confinement.enforced.append("no TCP connect or bind")
    else:
        confinement.missing.append(f"Landlock TCP rules (ABI 4; this kernel has {abi})")
    if abi >= 6:
        confinement.enforced.append("no signals or abstract sockets beyond the sandbox")
    else:
        confinement.missing.append(f"Landlock signal scoping (ABI 6; this kernel has {abi})")


def apply_seccomp(confinement: Confinement) -> None:
    """A seccomp filter: socket pairs only (no socket, connect, bind or listen), no exec, no ptrace or cross-process
    memory access, no io_uring."""
    try:
        import pyseccomp
    except (ImportError, RuntimeError) as error:  # pyseccomp raises RuntimeError when libseccomp is missing
        confinement.missing.append(f"seccomp (sockets, exec): {error}")
        return
    refused = pyseccomp.ERRNO(errno.EPERM)
    rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    no_network = pyseccomp.ERRNO(errno.EACCES)
    # A socket pair is connected from birth and reaches nothing outside the process; every other socket could.
    for name in ("socket", "connect", "bind", "listen"):
        rules.add_rule(no_network, name)
    rules.add_rule(no_network, "socketpair", pyseccomp.Arg(0, pyseccomp.NE, socket.AF_UNIX))
    for name in ("execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev"):
        rules.add_rule(refused, name)
    # Threads yes, processes no: a forked process would outlive the sandbox being killed at its time limit.
    rules.add_rule(refused, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, CLONE_THREAD, 0))
    # clone3 passes its flags in memory, out of a filter's reach: ENOSYS makes the C library fall back to clone.
    for name in ("clone3", "io_uring_setup", "io_uring_enter", "io_uring_register"):
        rules.add_rule(pyseccomp.ERRNO(errno.ENOSYS), name)
    rules.load()
    confinement.enforced.append(
        "seccomp: no sockets but local socket pairs (no connect, bind or listen), no exec or new processes, "
        "no ptrace, no io_uring"
    )


def confine(scratch: str, package_dirs: list[str]) -> Confinement:
    """Apply every kernel layer available (no_new_privs first, which both need). Irreversible for this process.

    seccomp goes first: loading libseccomp looks it up with `ldconfig`, a program Landlock would no longer let run.
    """
    confinement = Confinement()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        confinement.missing.append("no_new_privs (so neither Landlock nor seccomp)")
        return confinement
    apply_seccomp(confinement)
    apply_landlock(scratch, readable_roots(package_dirs), confinement)
    return confinement
