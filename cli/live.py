"""`grpo watch` in a terminal: a live view of one job (progress with ETA, the latest metrics, a reward sparkline,
the newest sample), redrawn as the job logs. Where the output is not a terminal, `display.print_progress` prints
a row per step instead."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from cli.client import Client

BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_POINTS = 60
# The metrics shown, in order: TRL's keys, and how each is labelled.
SHOWN = [
    ("reward", "reward"),
    ("reward_std", "reward_std"),
    ("kl", "kl"),
    ("completions/mean_length", "completion length"),
    ("loss", "loss"),
    ("learning_rate", "learning rate"),
]
AGENT_SHOWN = [("tools/call_frequency", "tool calls"), ("tools/failure_frequency", "tool failures")]
SAMPLE_SECONDS = 2.0
SAMPLE_CHARS = 300


def sparkline(values: list[float]) -> str:
    """The values as a row of block characters, lowest to highest."""
    points = [v for v in values if isinstance(v, int | float)][-SPARK_POINTS:]
    if not points:
        return ""
    low, high = min(points), max(points)
    span = (high - low) or 1.0
    return "".join(BLOCKS[min(len(BLOCKS) - 1, int((v - low) / span * len(BLOCKS)))] for v in points)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _turn(message: dict[str, Any]) -> str:
    """One turn of a conversation; a tool's result names the tool, an assistant's tool calls follow it."""
    who = f"tool {message.get('name') or ''}".strip() if message.get("role") == "tool" else message.get("role")
    calls = [
        f"  -> {call.get('function', {}).get('name')}({call.get('function', {}).get('arguments')})"
        for call in message.get("tool_calls") or []
        if isinstance(call, dict)
    ]
    return "\n".join([f"{who}: {message.get('content')}", *calls])


def _text(value: Any) -> str:
    if isinstance(value, list):
        value = "\n".join(_turn(m) for m in value if isinstance(m, dict))
    text = str(value)
    return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + "…"


class JobView:
    """What the live view shows of a job; `__rich__` draws it."""

    def __init__(self, job_id: str) -> None:
        self.job: dict[str, Any] = {"id": job_id, "status": "?"}
        self.latest: dict[str, Any] = {}
        self.step = 0
        self.rewards: list[tuple[int, float]] = []  # (step, reward)
        self.sample: dict[str, Any] | None = None
        self.progress = Progress(
            TextColumn("step"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("training", total=None)

    def set_job(self, job: dict[str, Any]) -> None:
        self.job = job
        if job.get("total_steps"):
            self.progress.update(self.task, total=job["total_steps"])

    def add_point(self, point: dict[str, Any]) -> None:
        # A resumed attempt logs the steps after its checkpoint again: they replace what was shown.
        self.rewards = [(step, reward) for step, reward in self.rewards if step < point["step"]]
        self.step = point["step"]
        self.latest = point["metrics"]
        if isinstance(self.latest.get("reward"), int | float):
            self.rewards.append((self.step, float(self.latest["reward"])))
        self.progress.update(self.task, completed=self.step)

    def __rich__(self) -> RenderableType:
        job = self.job
        status = Text(job.get("status", "?"), style="bold")
        title = Text.assemble(
            (job.get("name") or job["id"], "bold"), "  ", status, f"  attempt {job.get('attempt', 0)}"
        )
        metrics = Table.grid(padding=(0, 3))
        # An agent's job also shows how often its model called tools, and how often they failed.
        shown = SHOWN + [(key, label) for key, label in AGENT_SHOWN if key in self.latest]
        metrics.add_row(*[Text(label, style="dim") for _, label in shown])
        metrics.add_row(*[_number(self.latest.get(key)) for key, _ in shown])
        parts: list[RenderableType] = [title, self.progress, metrics]
        if self.rewards:
            parts.append(Text.assemble(("reward  ", "dim"), (sparkline([r for _, r in self.rewards]), "cyan")))
        if self.sample:
            rewards = ", ".join(f"{k} {_number(v)}" for k, v in (self.sample.get("rewards") or {}).items())
            body = Text.assemble(
                ("prompt: ", "dim"),
                _text(self.sample.get("prompt")),
                "\n",
                ("completion: ", "dim"),
                _text(self.sample.get("completion")),
                "\n",
                (f"{rewards}; advantage {_number(self.sample.get('advantage'))}", "dim"),
            )
            parts.append(Panel(body, title=f"newest sample (step {self.sample.get('step')})", title_align="left"))
        if job.get("status_reason"):
            parts.append(Text(f"waiting: {job['status_reason']}", style="yellow"))
        if job.get("error"):
            parts.append(Text(job["error"], style="red"))
        return Group(*parts)


def watch_live(console: Console, client: Client, job_id: str) -> dict[str, Any]:
    """Follow the job in a live view until it ends; returns the job as it ended."""
    view = JobView(job_id)
    next_sample = 0.0
    with Live(view, console=console, refresh_per_second=4):
        for point in client.follow(job_id, interval=0.5, on_status=view.set_job):
            view.add_point(point)
            if time.monotonic() >= next_sample:
                next_sample = time.monotonic() + SAMPLE_SECONDS
                view.sample = client.latest_sample(job_id)
        final = client.job(job_id)
        view.set_job(final)
        view.sample = client.latest_sample(job_id) or view.sample
    return final
