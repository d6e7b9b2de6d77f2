"""`grpo`: run the service and use it. Every command reads the `GRPO_*` settings (see `shared.settings`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from cli.access import ensure_local_key, keys, projects, require_a_key, show_audit
from cli.client import ApiRefused, Client, key_for
from cli.database import err_console, fail, prepare_database, printable_url
from cli.display import print_progress
from cli.secrets import secret_key, secrets
from shared.access.secrets import ensure_key_file
from shared.settings import Settings, load_settings

app = typer.Typer(
    help="GRPO fine-tuning as a service: run the API and workers, submit jobs, watch them learn.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
app.add_typer(projects, name="projects")
app.add_typer(keys, name="keys")
app.add_typer(secrets, name="secrets")
app.command("secret-key")(secret_key)
app.command("audit")(show_audit)

PortOption = Annotated[int, typer.Option(help="Port the API listens on.")]
HostOption = Annotated[str, typer.Option(help="Address the API binds to.")]
UrlOption = Annotated[str | None, typer.Option("--url", help="API address (default: GRPO_API_URL).")]


def _serve(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=settings.access_log,
    )


def _probe_device() -> str:
    """`cuda`, `cpu`, or `auto` when unknown: asked of torch in a short-lived process (the API must not import it)."""
    probe = "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')"
    try:
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "auto"
    answer = result.stdout.strip()
    return answer if result.returncode == 0 and answer in ("cuda", "cpu") else "auto"


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@app.command()
def up(port: PortOption = 8000, host: HostOption = "127.0.0.1") -> None:
    """The API and one worker in the foreground, on the embedded default (no Postgres or Redis needed)."""
    settings = load_settings()
    prepare_database(settings)
    if settings.device == "auto" and _probe_device() == "cpu":
        # The API and the worker share this machine: let the API refuse bf16/fp16 specs at submit time.
        os.environ["GRPO_DEVICE"] = "cpu"
        console.print("no CUDA GPU here: jobs train on the CPU (GRPO_DEVICE=cpu)", highlight=False)
    if not {"GRPO_PATHS", "GRPO_MODEL_ROOTS", "GRPO_DATASET_ROOTS"} & os.environ.keys():
        # One user on their own machine: the paths in their specs are their own files, wherever they keep them.
        os.environ["GRPO_PATHS"] = "anywhere"
        console.print("specs may name local paths anywhere on this machine (GRPO_PATHS=anywhere)", highlight=False)
    console.print(
        f"data dir {settings.data_dir}; database {printable_url(settings.effective_database_url)}; "
        f"broker {printable_url(settings.effective_broker_url)}",
        highlight=False,
    )
    key = ensure_local_key(settings)
    kept = ensure_key_file(settings)  # the projects' secrets are encrypted with it (unless GRPO_SECRET_KEY is set)
    if kept is not None:
        console.print(f"secrets are encrypted with the key in {kept} (mode 0600)", highlight=False)
    where = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    # Plain lines, never wrapped: the link must stay whole to be clicked or copied.
    typer.echo(f"dashboard (this link signs you in): http://{where}:{port}/login?key={key}")
    typer.echo(f"API key for `grpo submit` and the API: {settings.api_key_file} (Authorization: Bearer <key>)")
    # uvicorn re-raises a SIGTERM it handled once it has shut down; turned into SystemExit here, it lets the
    # `finally` below stop the worker instead of killing this process on the spot and orphaning the worker.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    worker = subprocess.Popen([sys.executable, "-m", "cli.main", "worker"])
    try:
        _serve(settings, host, port)
    finally:
        # Time for a running job to save a checkpoint and be handed back (resumed on the next `grpo up`).
        _stop(worker, grace=settings.stop_grace_seconds + 15)


@app.command()
def serve(
    port: PortOption = 8000,
    host: HostOption = "127.0.0.1",
    workers: Annotated[int, typer.Option(min=1, help="API processes (about one per CPU core).")] = 1,
) -> None:
    """The API alone (production: several can run behind a load balancer)."""
    settings = load_settings()
    prepare_database(settings)
    require_a_key(settings)
    _serve(settings, host, port, workers)


@app.command()
def worker(loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO") -> None:
    """A worker alone: takes one job at a time from the queue and trains it in a child process."""
    settings = load_settings()
    prepare_database(settings)
    from worker.app import run_worker

    run_worker(settings, loglevel=loglevel)


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest migration (the compose one-shot runs this)."""
    from shared.store.db import migrate as run_migrations

    settings = load_settings()
    settings.ensure_data_dir()
    revision = run_migrations(settings.effective_database_url)
    console.print(
        f"database at migration {revision}: {printable_url(settings.effective_database_url)}", highlight=False
    )


@app.command("tiny-model")
def tiny_model(
    directory: Annotated[Path, typer.Argument(help="Where to write the model and tokenizer.")],
    reward_model: Annotated[bool, typer.Option(help="A 1-label sequence classifier (a reward model) instead.")] = False,
    tool_calling: Annotated[
        bool, typer.Option(help="A model trained (in seconds, offline) to call the built-in calculator tool instead.")
    ] = False,
) -> None:
    """Write a tiny random-weight Qwen2 model (2 layers) and its chat-template tokenizer, offline, in seconds."""
    if reward_model and tool_calling:
        raise typer.BadParameter("--reward-model and --tool-calling build different models: choose one")
    if tool_calling:
        _tiny_tool_model(directory)
        return
    from worker.tiny_model import build_tiny_model

    build_tiny_model(directory, reward_model=reward_model)
    console.print(f"tiny {'reward ' if reward_model else ''}model written to {directory}", highlight=False)


def _tiny_tool_model(directory: Path) -> None:
    import time

    from worker.tiny_tool_model import build_tiny_tool_model

    started = time.monotonic()
    with console.status("training a tiny model to call calculator(expression: str) ..."):
        built = build_tiny_tool_model(directory)
    console.print(
        f"tiny tool-calling model written to {directory} in {time.monotonic() - started:.0f} s (seed {built.seed}): "
        "a Qwen3 with TRL's Qwen2.5 chat template, trained to call the built-in calculator(expression: str) "
        '(`{"type": "builtin", "name": "calculator"}` in a spec\'s tools)',
        highlight=False,
    )
    console.print(built.share.describe(), highlight=False)


def _read_spec(path: Path) -> Any:
    text = path.read_text()
    try:
        return yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise fail(f"{path} is not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {error}") from None


def _print_refusal(error: ApiRefused) -> None:
    err_console.print(f"[red]the API refused ({error.status}):[/red]", highlight=False)
    for problem in error.errors or [{"field": "", "message": str(error)}]:
        err_console.print(f"  - {problem['message']}", highlight=False)


# `grpo watch` and `grpo submit --watch` exit with the job's end: 0 succeeded, 1 failed, 3 cancelled.
EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 3}


def _watch(client: Client, job_id: str) -> dict[str, Any]:
    """Follow a job until it ends: a live view in a terminal, a row per step elsewhere (logs, pipes)."""
    if console.is_terminal:
        from cli.live import watch_live

        job = watch_live(console, client, job_id)
    else:

        def on_status(job: dict[str, Any]) -> None:
            console.print(f"[bold]{job['id']}[/bold] is {job['status']}", highlight=False)

        print_progress(console, client.follow(job_id, on_status=on_status))
        job = client.job(job_id)
    if job["status"] == "failed":
        err_console.print(f"[red]job failed:[/red] {job['error']}", highlight=False)
    else:
        console.print(f"job {job['id']} {job['status']}", highlight=False)
    return job


@app.command()
def submit(
    spec_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Job spec, JSON or YAML.")],
    url: UrlOption = None,
    watch: Annotated[bool, typer.Option(help="Follow the job's metrics until it ends.")] = False,
) -> None:
    """Submit a job spec; prints the job id (and, with --watch, the metrics as they come)."""
    settings = load_settings()
    client = Client(url or settings.api_url, key=key_for(settings))
    try:
        job = client.submit(_read_spec(spec_file))
    except ApiRefused as error:
        _print_refusal(error)
        raise typer.Exit(2) from None
    console.print(job["id"], highlight=False)
    if watch:
        final = _watch(client, job["id"])
        raise typer.Exit(EXIT_CODES[final["status"]])


@app.command()
def watch(job_id: str, url: UrlOption = None) -> None:
    """Follow a job until it ends: in a terminal, a live view (progress and ETA, the latest metrics, a reward
    sparkline, the newest sample); elsewhere a row per step (step, reward, reward_std, kl, completion length, loss).
    Exits 0 when the job succeeded, 1 when it failed, 3 when it was cancelled."""
    settings = load_settings()
    client = Client(url or settings.api_url, key=key_for(settings))
    try:
        final = _watch(client, job_id)
    except ApiRefused as error:
        raise fail(str(error)) from None
    raise typer.Exit(EXIT_CODES[final["status"]])


@app.command("jobs")
def list_jobs(
    url: UrlOption = None,
    status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
    metadata: Annotated[
        list[str] | None, typer.Option(help="Only jobs with this label (key=value); repeatable.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many of the newest jobs.")] = 20,
) -> None:
    """List the newest jobs: id, name, status, step, latest reward, age."""
    from rich.table import Table

    settings = load_settings()
    client = Client(url or settings.api_url, key=key_for(settings))
    try:
        found = client.jobs(limit=limit, status=status, metadata=metadata)
    except ApiRefused as error:
        raise fail(str(error)) from None
    table = Table("id", "name", "status", "step", "reward", "created", box=None, header_style="bold")
    for job in found:
        step = "" if job["latest_step"] is None else str(job["latest_step"])
        if job["total_steps"]:
            step += f"/{job['total_steps']}"
        reward = (job.get("latest_metrics") or {}).get("reward")
        table.add_row(
            job["id"],
            job["name"] or "",
            job["status"],
            step,
            "" if reward is None else f"{reward:.4g}",
            job["created_at"][:19].replace("T", " "),
        )
    console.print(table if found else "no jobs", highlight=False)


@app.command()
def events(job_id: str, url: UrlOption = None) -> None:
    """Print a job's timeline: state changes, attempts, resumes, errors (with their tracebacks) and worker notes."""
    settings = load_settings()
    client = Client(url or settings.api_url, key=key_for(settings))
    try:
        timeline = client.events(job_id)
    except ApiRefused as error:
        raise fail(str(error)) from None
    from rich.text import Text

    for event in timeline:
        when = event["created_at"][:23].replace("T", " ")
        style = "red" if event["kind"] == "error" else "dim" if event["kind"] == "info" else "bold"
        # Text, not markup: messages quote user code and paths, whose brackets are not rich's.
        console.print(Text.assemble(f"{when}  ", (f"{event['kind']:<6}", style), " ", event["message"]))
        traceback = (event.get("data") or {}).get("traceback")
        if traceback:
            console.print(Text(traceback.rstrip(), style="dim"))


def _act(job_id: str, action: str, url: str | None) -> None:
    settings = load_settings()
    client = Client(url or settings.api_url, key=key_for(settings))
    try:
        job = client.act(job_id, action)
    except ApiRefused as error:
        raise fail(str(error), 2 if error.status == 409 else 1) from None
    pending = f" ({job['requested_action']} requested)" if job.get("requested_action") else ""
    console.print(f"{job['id']} is {job['status']}{pending}", highlight=False)


@app.command()
def cancel(job_id: str, url: UrlOption = None) -> None:
    """Cancel a job (a running one's training process is ended within about a second)."""
    _act(job_id, "cancel", url)


@app.command()
def pause(job_id: str, url: UrlOption = None) -> None:
    """Pause a job: its worker saves a checkpoint and lets it go; `grpo resume` continues it."""
    _act(job_id, "pause", url)


@app.command()
def resume(job_id: str, url: UrlOption = None) -> None:
    """Resume a paused job from its latest checkpoint."""
    _act(job_id, "resume", url)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port for the demo's API; 0 picks a free one.")] = 0,
    steps: Annotated[int, typer.Option(help="Training steps.")] = 80,
) -> None:
    """Start the embedded service, train the tiny model with GRPO, and show reward and kl step by step."""
    from cli.demo import run_demo

    raise typer.Exit(run_demo(load_settings(), console, port=port, steps=steps))


def main() -> None:
    """Entry point of the `grpo` command."""
    app()


if __name__ == "__main__":
    main()
