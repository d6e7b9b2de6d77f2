"""`grpo demo`: the whole service on the embedded default, training a tiny model you can watch learn."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from cli.client import ApiRefused, Client, key_for
from cli.display import print_progress
from shared.settings import Settings

IDEAL_LENGTH = 10
PROMPTS = [
    "What is 2+2?",
    "Say hi.",
    "Tell me a story.",
    "Count to ten.",
    "Name a color.",
    "What is the capital of France?",
    "Describe a cat.",
    "Give me a word.",
]


def demo_spec(model_dir: Path, steps: int) -> dict[str, Any]:
    """A job the tiny random model visibly learns in seconds: the seed's length reward, completions of ~10 chars."""
    return {
        "name": f"demo: learn to answer in {IDEAL_LENGTH} characters",
        "model": str(model_dir),
        "train_dataset": {"rows": [{"prompt": p} for p in PROMPTS]},
        "reward_funcs": [{"type": "builtin", "name": "length", "params": {"ideal_length": IDEAL_LENGTH}}],
        "args": {
            "max_steps": steps,
            "num_generations": 4,
            "per_device_train_batch_size": 8,
            "max_completion_length": 16,
            "learning_rate": 5e-2,  # a tiny random model needs big steps to move within a demo
            "beta": 0.04,
            "logging_steps": 1,
            "gradient_checkpointing": False,
            "seed": 0,
        },
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def embedded_service(settings: Settings, port: int, log_path: Path, timeout: float = 120.0) -> Iterator[str]:
    """Run `grpo up` in the background for the length of the block; yields its URL."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "up", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
    url = f"http://127.0.0.1:{port}"
    client = Client(url)
    try:
        deadline = time.monotonic() + timeout
        while not client.healthy():
            if process.poll() is not None:
                raise RuntimeError(f"the service exited ({process.returncode}); see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service did not answer within {timeout:.0f}s; see {log_path}")
            time.sleep(0.2)
        yield url
    finally:
        client.close()
        process.terminate()  # `grpo up` stops its worker, then itself
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _mean(points: list[dict[str, Any]], key: str) -> float | None:
    values = [p["metrics"][key] for p in points if p["metrics"].get(key) is not None]
    return statistics.fmean(values) if values else None


def run_demo(settings: Settings, console: Console, *, port: int, steps: int) -> int:
    """Run the demo; returns the exit code (0 when the job succeeded)."""
    model_dir = settings.data_dir / "tiny-model"
    if not (model_dir / "config.json").exists():
        from worker.tiny_model import build_tiny_model

        console.print(f"building a tiny random model in {model_dir} ...", highlight=False)
        build_tiny_model(model_dir)
    port = port or free_port()
    log_path = settings.data_dir / "demo-service.log"
    console.print(f"starting the embedded service on port {port} (log: {log_path}) ...", highlight=False)
    with embedded_service(settings, port, log_path) as url:
        client = Client(url, key=key_for(settings))
        try:
            job = client.submit(demo_spec(model_dir, steps))
        except ApiRefused as error:
            console.print(f"[red]the demo job was refused:[/red] {error}", highlight=False)
            return 1
        console.print(
            f"submitted {job['id']}: GRPO on the tiny model, reward = -|{IDEAL_LENGTH} - len(completion)|",
            highlight=False,
        )
        points = print_progress(
            console, client.follow(job["id"], on_status=lambda j: console.print(f"job is {j['status']}"))
        )
        final = client.job(job["id"])
        client.close()

    if final["status"] != "succeeded":
        console.print(f"[red]job {final['status']}:[/red] {final['error']}", highlight=False)
        return 1
    window = max(1, len(points) // 5)
    first, last = _mean(points[:window], "reward"), _mean(points[-window:], "reward")
    kl = _mean(points[-window:], "kl")
    console.print(
        f"[bold green]job succeeded[/bold green] after {len(points)} logged steps: mean reward "
        f"{first:.2f} over the first {window} steps -> {last:.2f} over the last {window}; "
        f"kl {kl:.4f} at the end."
        if first is not None and last is not None and kl is not None
        else f"job succeeded after {len(points)} logged steps",
        highlight=False,
    )
    console.print(f"metrics: {url}/v1/jobs/{job['id']}/metrics (run `grpo up` to browse them again)", highlight=False)
    return 0
