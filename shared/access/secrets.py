"""Secrets: a project's credentials (HF_TOKEN, WANDB_API_KEY, ...), kept encrypted, and given only to the training
processes of the jobs that name them.

A secret is set over the API (`POST /v1/secrets`, `grpo secrets set NAME`) and is write-only: no answer, list,
event, log line or audit entry holds its value. The database keeps it encrypted with Fernet (AES-128-CBC and
HMAC-SHA256, from `cryptography`) under the service's key, GRPO_SECRET_KEY, or else the file <data dir>/secret-key
that `grpo up` makes. What is encrypted also names the secret's project and name, so that a row copied to another
project or name does not decrypt as that one: a job fails rather than use another team's credential.

A job names the secrets it needs (`"secrets": ["HF_TOKEN"]`): submit checks that its project has them, and its
worker decrypts them and hands them to the job's training process as environment variables. The reward sandbox
starts with a clean environment of its own (sandbox/client.py), so user reward code never sees them.

A secret's name is an environment variable's name, and not one that changes how the service or its processes run
(GRPO_*, PATH, LD_PRELOAD, PYTHONPATH, CUDA_VISIBLE_DEVICES, ...): such a "secret" could load code into the
training process, move a job onto another job's GPUs, or undo the operator's policy.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.access.audit import record
from shared.access.projects import get_project
from shared.settings import Settings
from shared.spec.problems import Problem
from shared.store.models import Secret, utcnow

KEY_SETTING = "GRPO_SECRET_KEY"
NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
# An environment variable's value: the kernel takes up to 128 KiB per string when a rank's process is started.
MAX_VALUE_CHARS = 32 * 1024
MAKE_A_KEY = (
    '`grpo secret-key` prints one (or: python -c "from cryptography.fernet import Fernet; '
    'print(Fernet.generate_key().decode())")'
)

_SERVICE = "the service's own settings are named GRPO_*, and a secret must not override them"
_LOADER = "it changes which native code the job's processes load"
_PYTHON = "it changes how Python starts and where it imports code from"
_PROCESS = "the service sets it for the processes it starts (which programs run, where files go)"
_DEVICES = "the worker sets it to place the job on its GPUs and training processes"
_LOADING = (
    "it changes where models and datasets are loaded from and what code they may run, which the operator's "
    "settings decide"
)
_NETWORK = "it changes where the job's network traffic goes or which certificates it trusts"
# Only names that say they hold a credential: a blocklist of dangerous variables can never be complete (CC and CXX
# name the compiler torch.compile runs, GCONV_PATH the code iconv loads, ...), and a value given to a variable
# some program reads as a path to run is code outside the sandbox.
CREDENTIAL_ENDINGS = ("_TOKEN", "_API_KEY", "_KEY", "_KEY_ID", "_SECRET", "_PASSWORD")
CREDENTIAL_NAME = re.compile(r"[A-Z][A-Z0-9_]*(" + "|".join(CREDENTIAL_ENDINGS) + ")")
# Names no secret may have, by how they start, and why.
REFUSED_PREFIXES = {
    "GRPO_": _SERVICE,
    "LD_": _LOADER,
    "DYLD_": _LOADER,
    "GLIBC_": _LOADER,
    "MALLOC_": _LOADER,
    "PYTHON": _PYTHON,
    "CUDA_": _DEVICES,
    "NCCL_": _DEVICES,
    "TORCH": _DEVICES,
    "ACCELERATE_": _DEVICES,
    "VLLM_": _DEVICES,
    "HF_HUB_": _LOADING,
    "HF_DATASETS_": _LOADING,
    "TRANSFORMERS_": _LOADING,
    "OPENSSL_": _NETWORK,
    "SSL_": _NETWORK,
}
# ... and whole names.
REFUSED_NAMES = {
    **dict.fromkeys(
        ("PATH", "HOME", "SHELL", "ENV", "BASH_ENV", "IFS", "TMPDIR", "TMP", "TEMP", "PWD", "USER", "LOGNAME"), _PROCESS
    ),
    **dict.fromkeys(
        ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT"), _DEVICES
    ),
    **dict.fromkeys(("HF_HOME", "HF_ENDPOINT"), _LOADING),
    **dict.fromkeys(
        ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"), _NETWORK
    ),
}

# The spec's `secrets` field (shared/spec/job.py): names only; `check_spec_secrets` says what is wrong with them.
SpecSecrets = Annotated[
    list[str],
    Field(
        default_factory=list,
        max_length=32,
        description="Names of the project's secrets (POST /v1/secrets) that the training process gets as environment "
        'variables, e.g. ["HF_TOKEN", "WANDB_API_KEY"]; the reward sandbox never does. Each must exist when the job '
        "is submitted.",
    ),
]


class SecretRefused(ValueError):
    """A secret could not be set, listed or deleted; the message says why and what to do, `reason` what kind of
    refusal it is: `invalid` (a name or value), `missing` (no such secret or project), `unconfigured` (the service
    has no key to encrypt with)."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class SecretUnavailable(RuntimeError):
    """A job's secrets cannot be given to it (deleted since it was submitted, no key, the wrong key): the message,
    which names the secret and the fix and never its value, is the job's error."""


# --- Names and values ---------------------------------------------------------------------------------------


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a secret, or None when it can."""
    if not NAME.fullmatch(name):
        return (
            f"secret name {name!r} is not valid: name it as an environment variable, 1 to 64 capital letters, "
            "digits and _, not starting with a digit (HF_TOKEN, WANDB_API_KEY)"
        )
    prefix = next((p for p in REFUSED_PREFIXES if name.startswith(p)), None)
    reason = REFUSED_PREFIXES[prefix] if prefix is not None else REFUSED_NAMES.get(name)
    if reason is None and not CREDENTIAL_NAME.fullmatch(name):
        return (
            f"secret name {name!r} is refused: a secret must be named as a credential, ending in "
            f"{', '.join(CREDENTIAL_ENDINGS)} (HF_TOKEN, WANDB_API_KEY, AWS_SECRET_ACCESS_KEY), because every other "
            "environment variable may change which programs the job's processes run (CC, CXX, ...)"
        )
    if reason is None:
        return None
    which = f"names starting with {prefix}" if prefix is not None else name
    return (
        f"secret name {name!r} is refused ({which}): {reason}; a secret is a credential for the training process "
        "(HF_TOKEN, WANDB_API_KEY): give it another name"
    )


def check_name(name: str) -> str:
    """`name` if it can name a secret; SecretRefused otherwise."""
    problem = name_problem(name)
    if problem is not None:
        raise SecretRefused(problem)
    return name


def check_spec_secrets(names: list[str]) -> list[Problem]:
    """Problems of a spec's `secrets` list: names that cannot be secrets', and names given twice."""
    problems = [
        Problem(f"secrets[{index}]", f"secrets[{index}]: {problem}")
        for index, name in enumerate(names)
        if (problem := name_problem(name)) is not None
    ]
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            problems.append(Problem(f"secrets[{index}]", f"secrets[{index}]: {name} is listed twice: list it once"))
        seen.add(name)
    return problems


def _check_value(value: str) -> None:
    # Never quote the value: the message is an API answer.
    if not value:
        raise SecretRefused("a secret's value may not be empty: to remove a secret, delete it")
    if len(value) > MAX_VALUE_CHARS:
        raise SecretRefused(
            f"a secret's value may hold at most {MAX_VALUE_CHARS} characters (it is an environment "
            "variable of the training process)"
        )
    if "\x00" in value:
        raise SecretRefused("a secret's value may not contain a NUL character: an environment variable cannot hold it")


# --- The key ------------------------------------------------------------------------------------------------


def new_key() -> str:
    """A new random Fernet key, as GRPO_SECRET_KEY takes it."""
    return Fernet.generate_key().decode("ascii")


def key_is_set(settings: Settings) -> bool:
    """Whether GRPO_SECRET_KEY gives the key (set and not blank: compose passes an unset one as empty)."""
    return settings.secret_key is not None and bool(settings.secret_key.get_secret_value().strip())


def _unconfigured(settings: Settings) -> SecretRefused:
    return SecretRefused(
        f"secrets are not set up on this service: it has no {KEY_SETTING} (nor a {settings.secret_key_file} file). "
        f"The operator makes a key ({MAKE_A_KEY}) and gives the same {KEY_SETTING} to the API and every worker",
        "unconfigured",
    )


def _configured_keys(settings: Settings) -> tuple[list[str], str] | None:
    """The keys the settings give, and where they came from; None when there are none."""
    if key_is_set(settings):
        assert settings.secret_key is not None
        return settings.secret_key.get_secret_value().split(","), KEY_SETTING
    path = settings.secret_key_file
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise SecretRefused(f"{path} (the key of secrets) cannot be read: {error.strerror}", "unconfigured") from None
    return text.split(","), str(path)


def secret_cipher(settings: Settings) -> MultiFernet:
    """The cipher of this service's secrets: the keys of GRPO_SECRET_KEY (the first encrypts; each decrypts), or
    else of <data dir>/secret-key. SecretRefused (`unconfigured`) where there is none, or one is not a Fernet key."""
    found = _configured_keys(settings)
    if found is None:
        raise _unconfigured(settings)
    keys, source = found
    try:
        return MultiFernet([Fernet(key.strip().encode()) for key in keys if key.strip()])
    except ValueError:  # not 32 url-safe base64-encoded bytes (never quoted: it is the key)
        raise SecretRefused(
            f"{source} does not hold Fernet keys (each 32 url-safe base64-encoded bytes; {MAKE_A_KEY})",
            "unconfigured",
        ) from None


def ensure_key_file(settings: Settings) -> Path | None:
    """`grpo up`'s key of secrets: <data dir>/secret-key, made (mode 0600) when it is missing; None where
    GRPO_SECRET_KEY is set, which then decides."""
    if key_is_set(settings):
        return None
    path = settings.secret_key_file
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(descriptor, "w") as out:
        out.write(new_key() + "\n")
    return path


def _sealed(project: str, name: str, value: str) -> bytes:
    return json.dumps({"project": project, "name": name, "value": value}).encode()


def encrypt(cipher: MultiFernet, project: str, name: str, value: str) -> str:
    """The text the database keeps for secret `name` of `project`."""
    return cipher.encrypt(_sealed(project, name, value)).decode("ascii")


def decrypt(cipher: MultiFernet, project: str, name: str, ciphertext: str) -> str:
    """The value of secret `name` of `project`; SecretUnavailable, naming the secret and the setting, when the key
    does not open it or it was not encrypted as this secret."""
    try:
        sealed: Any = json.loads(cipher.decrypt(ciphertext.encode("ascii")))
    except (InvalidToken, ValueError):
        raise SecretUnavailable(
            f"secret {name} of project {project} does not decrypt with this service's {KEY_SETTING} (it was set "
            f"under another key): give the API and workers the key it was set with, or set it again "
            f"(`grpo secrets set {name}`)"
        ) from None
    if not isinstance(sealed, dict) or sealed.get("project") != project or sealed.get("name") != name:
        raise SecretUnavailable(
            f"secret {name} of project {project} was not encrypted as that secret (its row was copied from another "
            f"project or name): set it again (`grpo secrets set {name}`)"
        )
    return str(sealed["value"])


# --- The store ----------------------------------------------------------------------------------------------


def _project_of(session: Session, project: str) -> str:
    if get_project(session, project) is None:
        raise SecretRefused(f"there is no project {project!r}: `grpo projects list` shows them", "missing")
    return project


@lru_cache
def _upsert_statement(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(Secret)
    return statement.on_conflict_do_update(
        index_elements=[Secret.project, Secret.name],
        set_={
            "ciphertext": statement.excluded.ciphertext,
            "updated_at": statement.excluded.updated_at,
            "updated_by": statement.excluded.updated_by,
        },
    )


def set_secret(
    session: Session, cipher: MultiFernet, project: str, name: str, value: str, *, by: str | None = None
) -> tuple[Secret, bool]:
    """Create or replace secret `name` of `project`; returns its row and whether it was created. The audit log says
    `by` set it (never the value)."""
    check_name(name)
    _check_value(value)
    _project_of(session, project)
    created = session.get(Secret, (project, name)) is None
    now = utcnow()
    row = {"project": project, "name": name, "created_at": now, "updated_at": now, "updated_by": by}
    # One statement: two requests setting the same new secret at once both succeed (the later value stays).
    session.execute(
        _upsert_statement(session.get_bind().dialect.name), {**row, "ciphertext": encrypt(cipher, project, name, value)}
    )
    record(session, by, "secret.set", project=project, target=name, data={"created": created})
    secret = session.get(Secret, (project, name), populate_existing=True)
    assert secret is not None  # written just now, in this transaction
    return secret, created


def list_secrets(session: Session, project: str) -> list[Secret]:
    """The secrets of `project`, by name (their rows hold only ciphertext, which no answer shows)."""
    _project_of(session, project)
    return list(session.scalars(select(Secret).where(Secret.project == project).order_by(Secret.name)))


def delete_secret(session: Session, project: str, name: str, *, by: str | None = None) -> None:
    """Delete secret `name` of `project` (a job that names it and has not started fails, saying so); SecretRefused
    when there is none."""
    row = session.get(Secret, (project, name))
    if row is None:
        _project_of(session, project)
        raise SecretRefused(
            f"project {project} has no secret {name!r}: `grpo secrets list` shows its secrets", "missing"
        )
    session.delete(row)
    session.flush()
    record(session, by, "secret.delete", project=project, target=name)


def missing_secrets(session: Session, project: str, names: list[str]) -> list[Problem]:
    """A problem for each secret a spec names that its project does not have (another project's never counts)."""
    if not names:
        return []
    found = set(session.scalars(select(Secret.name).where(Secret.project == project, Secret.name.in_(names))))
    return [
        Problem(
            f"secrets[{index}]",
            f"secrets[{index}]: project {project} has no secret {name}: set it with `grpo secrets set {name}` (or "
            "POST /v1/secrets), or remove it from the spec",
        )
        for index, name in enumerate(names)
        if name not in found
    ]


def job_environment(session: Session, settings: Settings, project: str, names: list[str]) -> dict[str, str]:
    """The secrets a job of `project` names, decrypted, for its training process's environment; SecretUnavailable
    when one is gone or cannot be decrypted here."""
    if not names:
        return {}
    rows = {
        row.name: row.ciphertext
        for row in session.scalars(select(Secret).where(Secret.project == project, Secret.name.in_(names)))
    }
    missing = [name for name in names if name not in rows]
    if missing:
        listed = ", ".join(missing)
        raise SecretUnavailable(
            f"the job needs secret(s) {listed}, which project {project} no longer has (deleted after the job was "
            f"submitted): set them again (`grpo secrets set NAME`, or POST /v1/secrets) and submit the job again"
        )
    try:
        cipher = secret_cipher(settings)
    except SecretRefused as error:
        raise SecretUnavailable(
            f"the job needs secret(s) {', '.join(names)}, and this worker cannot decrypt them: {error}"
        ) from None
    return {name: decrypt(cipher, project, name, rows[name]) for name in names}
