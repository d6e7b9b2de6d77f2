"""`grpo secrets` (a project's credentials, over the API like `grpo submit`) and `grpo secret-key` (the operator's
key that encrypts them).

A secret's value is read from standard input, or from a prompt that does not echo it: never from the command
line, which every user of the machine can read (`ps`, /proc/<pid>/cmdline) and shells keep in their history.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli.client import ApiRefused, Client, key_for
from cli.database import err_console, fail
from shared.access.secrets import ensure_key_file, key_is_set, new_key
from shared.settings import Settings, load_settings

secrets = typer.Typer(
    help="A project's secrets (HF_TOKEN, WANDB_API_KEY, ...): set, listed by name, deleted. Write-only: no command "
    'or answer shows a value again; a job names the ones its training process gets (`"secrets": ["HF_TOKEN"]`).',
    no_args_is_help=True,
)
console = Console()

UrlOption = Annotated[str | None, typer.Option("--url", help="API address (default: GRPO_API_URL).")]
ProjectOption = Annotated[
    str | None, typer.Option(help="The project (an admin key's choice; default: the key's own project).")
]


def _client(settings: Settings, url: str | None) -> Client:
    return Client(url or settings.api_url, key=key_for(settings))


def read_value(name: str) -> str:
    """The value of secret `name`: typed at a prompt that does not echo it, or piped in (one trailing newline, as
    `echo` adds, is not part of it)."""
    if sys.stdin.isatty():
        value: str = typer.prompt(f"value of {name} (not shown)", hide_input=True, err=True)
    else:
        value = sys.stdin.read()
        value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        raise fail(f"no value for {name}: pipe it in (`grpo secrets set {name} < token.txt`) or type it at the prompt")
    return value


@secrets.command("set")
def set_secret(name: str, project: ProjectOption = None, url: UrlOption = None) -> None:
    """Set a secret (create it, or replace its value); the value comes from standard input or a hidden prompt."""
    settings = load_settings()
    client = _client(settings, url)
    value = read_value(name)
    try:
        secret, created = client.set_secret(name, value, project)
    except ApiRefused as error:
        raise fail(str(error)) from None
    what = "created" if created else "replaced"
    err_console.print(f"secret {secret['name']} of project {secret['project']} {what}", highlight=False)


def _when(moment: str) -> str:
    return datetime.fromisoformat(moment).strftime("%Y-%m-%d %H:%M:%S")


@secrets.command("list")
def list_secrets(project: ProjectOption = None, url: UrlOption = None) -> None:
    """The project's secrets by name, with when and by which key each was set last (never a value)."""
    settings = load_settings()
    try:
        found = _client(settings, url).secrets(project)
    except ApiRefused as error:
        raise fail(str(error)) from None
    table = Table("name", "project", "set", "by", box=None, header_style="bold")
    for secret in found:
        table.add_row(secret["name"], secret["project"], _when(secret["updated_at"]), secret["updated_by"] or "-")
    console.print(table if found else "no secrets", highlight=False)


@secrets.command("delete")
def delete_secret(name: str, project: ProjectOption = None, url: UrlOption = None) -> None:
    """Delete a secret (a queued job that names it fails when it starts, saying so)."""
    settings = load_settings()
    try:
        _client(settings, url).delete_secret(name, project)
    except ApiRefused as error:
        raise fail(str(error)) from None
    err_console.print(f"secret {name} deleted", highlight=False)


def secret_key(
    write: Annotated[
        bool, typer.Option(help="Keep it in <data dir>/secret-key (mode 0600) instead, unless a key is there already.")
    ] = False,
) -> None:
    """Print a new random key for GRPO_SECRET_KEY (give the same one to the API and every worker)."""
    if not write:
        typer.echo(new_key())
        return
    settings = load_settings()
    if key_is_set(settings):
        raise fail("GRPO_SECRET_KEY is set, and it decides: unset it to keep the key in the data dir instead")
    path = settings.secret_key_file
    existed = path.exists()
    ensure_key_file(settings)
    err_console.print(f"{path} {'holds a key already: kept' if existed else 'written (mode 0600)'}", highlight=False)
