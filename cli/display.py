"""How training progress looks in a terminal: a row per logged step."""

from __future__ import annotations

from typing import Any

from rich.console import Console

# (header, TRL metric key, width)
COLUMNS = [
    ("step", None, 6),
    ("reward", "reward", 10),
    ("reward_std", "reward_std", 10),
    ("kl", "kl", 10),
    ("length", "completions/mean_length", 8),
    ("loss", "loss", 10),
]


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def header() -> str:
    return "  ".join(name.rjust(width) for name, _key, width in COLUMNS)


def row(point: dict[str, Any]) -> str:
    metrics = point["metrics"]
    cells = [str(point["step"]).rjust(COLUMNS[0][2])]
    cells += [_number(metrics.get(key)).rjust(width) for _name, key, width in COLUMNS[1:]]
    return "  ".join(cells)


def print_progress(console: Console, points: Any) -> list[dict[str, Any]]:
    """Print a header, then a row for every point as it arrives; returns the points."""
    seen = []
    console.print(header(), style="bold", highlight=False)
    for point in points:
        seen.append(point)
        console.print(row(point), highlight=False)
    return seen
