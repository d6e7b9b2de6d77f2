"""A job's metrics as chart series, downsampled by the database: what the dashboard draws.

A job may log hundreds of thousands of steps; a chart needs about a thousand points. Over a step range holding
more points than asked for, the database averages each metric over equal buckets of steps (one row per bucket, a
single GROUP BY): the cost follows the range asked for, and the API never reads the raw rows. A range holding
fewer points comes back at full resolution (what a zoom asks for).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select

from shared.store.models import MetricPoint

# What a job page charts, when it does not name keys: these, and each reward function's mean.
CHART_KEYS = ("reward", "reward_std", "kl", "completions/mean_length", "loss", "learning_rate")
REWARD_MEAN = re.compile(r"^rewards/.+/mean$")
MAX_KEYS = 24


@dataclass
class Series:
    """Steps (the x axis) and, per key, one value per step (None where the step did not log it)."""

    keys: list[str]
    steps: list[int] = field(default_factory=list)
    values: dict[str, list[float | None]] = field(default_factory=dict)
    # Points in the range, before downsampling; each returned step stands for `bucket_steps` steps.
    points: int = 0
    downsampled: bool = False
    bucket_steps: int = 1
    from_step: int | None = None
    to_step: int | None = None


def chart_keys(latest_metrics: dict[str, Any] | None) -> list[str]:
    """The keys a job page charts, in order, among those the job logs."""
    logged = set(latest_metrics or {})
    rewards = sorted(k for k in logged if REWARD_MEAN.match(k))
    ordered = [*CHART_KEYS[:3], *rewards, *CHART_KEYS[3:]]
    return [k for k in ordered if k in logged]


def _value(key: str) -> Any:
    # The metric as a float (JSON null, a NaN TRL logged, reads as NULL).
    return MetricPoint.metrics[key].as_float()


def read_series(
    connection: Connection,
    job_id: str,
    keys: list[str],
    *,
    max_points: int,
    from_step: int | None = None,
    to_step: int | None = None,
) -> Series:
    """The metrics `keys` of a job between two steps (inclusive; None: the whole run), at most `max_points` steps."""
    in_range = [MetricPoint.job_id == job_id]
    if from_step is not None:
        in_range.append(MetricPoint.step >= from_step)
    if to_step is not None:
        in_range.append(MetricPoint.step <= to_step)
    count, first, last = connection.execute(
        select(func.count(), func.min(MetricPoint.step), func.max(MetricPoint.step)).where(*in_range)
    ).one()
    series = Series(keys=keys, points=count, from_step=first, to_step=last, values={k: [] for k in keys})
    if not count:
        return series
    values = [_value(key).label(f"v{i}") for i, key in enumerate(keys)]
    if count <= max_points:
        statement = select(MetricPoint.step, *values).where(*in_range).order_by(MetricPoint.step)
    else:
        series.downsampled = True
        series.bucket_steps = math.ceil((last - first + 1) / max_points)
        bucket = ((MetricPoint.step - first) // series.bucket_steps).label("bucket")
        averaged = [func.avg(_value(key)).label(f"v{i}") for i, key in enumerate(keys)]
        statement = select(func.min(MetricPoint.step), *averaged).where(*in_range).group_by(bucket).order_by(bucket)
    for row in connection.execute(statement):
        series.steps.append(row[0])
        for i, key in enumerate(keys):
            value = row[i + 1]
            series.values[key].append(None if value is None else float(value))
    return series
