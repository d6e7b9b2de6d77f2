"""The results table of BENCHMARKS.md, rewritten between its markers after every run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

START, END = "<!-- results:start -->", "<!-- results:end -->"

Row = tuple[str, str, str, str, str, bool | None]


def _met(value: float, limit: float, at_most: bool = True) -> bool:
    return value <= limit if at_most else value >= limit


def _overhead(section: dict[str, Any]) -> list[Row]:
    bare = section["bare_trl"]
    rows: list[Row] = []
    for name, label in (("embedded", "embedded"), ("postgres_redis", "Postgres + Redis")):
        figures = section[name]
        rows.append(
            (
                f"1. training time, {section['steps']} steps, {label}",
                f"{figures['train_runtime_s']} s",
                f"bare TRL script {bare['train_runtime_s']} s",
                f"x{figures['train_time_ratio']}",
                "<= x1.05",
                _met(figures["train_time_ratio"], 1.05),
            )
        )
        rows.append(
            (
                f"1. POST -> succeeded, {label}",
                f"{figures['post_to_succeeded_s']} s",
                f"bare script process {bare['process_s']} s",
                f"{figures['extra_s_vs_bare_process']:+} s",
                "<= +2 s",
                _met(figures["extra_s_vs_bare_process"], 2.0),
            )
        )
    return rows


def _dispatch(section: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name, label, target in (("embedded", "embedded", 1000.0), ("redis", "Redis", 50.0)):
        service, floor = section[name]["service"], section[name]["celery_noop_floor"]
        latency = service["submit_to_running"]
        rows.append(
            (
                f"2. submit -> running, {label} (p50/p95/p99, n={latency['n']})",
                f"{latency['p50_ms']} / {latency['p95_ms']} / {latency['p99_ms']} ms",
                f"Celery no-op p50 {floor['submit_to_start']['p50_ms']} ms",
                f"x{section[name]['p50_ratio_to_floor']}",
                f"p50 <= {target:g} ms",
                _met(latency["p50_ms"], target),
            )
        )
        gap, floor_gap = service["back_to_back_gap"], floor["back_to_back_gap"]
        rows.append(
            (
                f"2. gap between back-to-back jobs, {label} (p50/max)",
                f"{gap['p50_ms']} / {gap['max_ms']} ms",
                f"Celery no-op {floor_gap['p50_ms']} / {floor_gap['max_ms']} ms",
                "",
                "no ~2 s stall",
                gap["max_ms"] < 1500,
            )
        )
        if "celery_noop_prefork" in section[name]:
            prefork = section[name]["celery_noop_prefork"]
            rows.append(
                (
                    f"2. Celery no-op on {label}, prefork pool (p50 latency / max back-to-back gap)",
                    f"{prefork['submit_to_start']['p50_ms']} / {prefork['back_to_back_gap']['max_ms']} ms",
                    "the solo pool above",
                    "",
                    "(Celery issue #4378)",
                    None,
                )
            )
    return rows


def _latency(section: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name, label, stream_target in (("embedded", "embedded", 200), ("postgres_redis", "Postgres + Redis", 1000)):
        polled = section[name]
        rows.append(
            (
                f"3. on_log -> visible on /metrics, {label} (p50/p99)",
                f"{polled['p50_ms']} / {polled['p99_ms']} ms",
                f"client polls every {polled['poll_interval_ms']:g} ms",
                "",
                "p99 <= 1000 ms",
                _met(polled["p99_ms"], 1000),
            )
        )
        streamed = section.get(f"{name}_stream")
        if streamed:
            rows.append(
                (
                    f"3. on_log -> arrives on the live stream, {label} (p50/p99)",
                    f"{streamed['p50_ms']} / {streamed['p99_ms']} ms",
                    f"polling every 5 ms: p50 {polled['p50_ms']} ms",
                    f"x{round(streamed['p50_ms'] / max(polled['p50_ms'], 0.01), 2)}",
                    f"p99 <= {stream_target} ms",
                    _met(streamed["p99_ms"], stream_target),
                )
            )
    return rows


def _api(section: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for size in ("large", "small"):
        data = section[size]
        scale = f"{data['jobs']} jobs / {data['metric_points']:,} points"
        for connections in ("c8", "c16"):
            floor = data[connections]["healthz"]
            for name, label in (("metrics_page_100", "metrics page of 100"), ("job_list_page_20", "job list page")):
                figures = data[connections][name]
                rows.append(
                    (
                        f"4. {label}, {scale}, {connections[1:]} connections",
                        f"{figures['requests_per_s']:,.0f} req/s, p50 {figures['p50_ms']} / p99 {figures['p99_ms']} ms",
                        f"/healthz {floor['requests_per_s']:,.0f} req/s, p99 {floor['p99_ms']} ms",
                        f"x{figures['throughput_ratio_to_healthz']}",
                        ">= 1,000 req/s, p99 <= 50 ms",
                        figures["requests_per_s"] >= 1000 and figures["p99_ms"] <= 50 and figures["errors"] == 0,
                    )
                )
    for name, ratio in section["large_to_small_throughput"].items():
        rows.append(
            (
                f"4. throughput, {name}: large table / small table",
                f"x{ratio}",
                "the small table",
                "",
                "cost grows with the page, not the table",
                ratio >= 0.8,
            )
        )
    auth = section["large"]["auth"]
    rows.append(
        (
            f"4. metrics page of 100 with the key check (a member's key), {auth['connections']} connections",
            f"{auth['auth_on_requests_per_s']:,.0f} req/s",
            f"the same API open (GRPO_AUTH=off) {auth['auth_off_requests_per_s']:,.0f} req/s",
            f"x{auth['throughput_ratio_on_to_off']}",
            "the key check costs < 5% (>= x0.95)",
            auth["throughput_ratio_on_to_off"] >= 0.95 and auth["errors"] == 0,
        )
    )
    memory = section["large"]["api_rss_mib"]
    rows.append(
        (
            "6. API process memory (idle / peak under load)",
            f"{memory['idle']} / {memory['peak_under_load']} MiB",
            "",
            "",
            "",
            None,
        )
    )
    return rows


def _ingest(section: dict[str, Any]) -> list[Row]:
    return [
        (
            f"5. metric points ingested by one job's writer, {name}",
            f"{figures['writer_points_per_s']:,} points/s",
            f"bulk INSERT {figures['bulk_insert_points_per_s']:,} points/s",
            f"x{figures['writer_to_bulk_ratio']}",
            "none lost",
            figures["lost"] == 0,
        )
        for name, figures in section.items()
        if isinstance(figures, dict)
    ]


def _memory(section: dict[str, Any]) -> list[Row]:
    rss = section["worker_rss_mib"]
    return [
        (
            f"6. worker memory after {section['jobs']} jobs (after the last / peak between jobs)",
            f"{rss['after_last_job']} / {rss['peak_between_jobs']} MiB",
            f"idle worker {rss['idle']} MiB",
            f"x{section['last_to_idle_ratio']}",
            "back to idle (<= x1.05)",
            _met(section["last_to_idle_ratio"], 1.05),
        ),
        (
            "6. API process memory, idle",
            f"{section['api_rss_mib']['idle']} MiB",
            f"bare FastAPI app on uvicorn {section['api_rss_mib']['bare_fastapi']} MiB",
            f"x{section['api_to_bare_ratio']}",
            "(no target; never imports torch)",
            None,
        ),
    ]


def _preview(section: dict[str, Any]) -> list[Row]:
    floor = section["interpreter_floor"]
    rows: list[Row] = []
    for name, label in (("seed_rewards", "the seed's 3 Python rewards"), ("accuracy", "the accuracy built-in")):
        latency = section[name]
        rows.append(
            (
                f"7. reward preview, {label} (p50/p95, n={latency['n']})",
                f"{latency['p50_ms']} / {latency['p95_ms']} ms",
                f"bare Python start p50 {floor['p50_ms']} ms; /healthz p50 {section['healthz_floor']['p50_ms']} ms",
                f"x{round(latency['p50_ms'] / max(floor['p50_ms'], 0.01), 2)}",
                "p95 < 1000 ms",
                _met(latency["p95_ms"], 1000.0),
            )
        )
    return rows


def _series(section: dict[str, Any]) -> list[Row]:
    floor = section["healthz_floor"]
    rows: list[Row] = []
    for name, label in (("overview", "7 charts, 1,000 buckets"), ("zoom_500_steps", "zoom to 500 steps, full")):
        latency = section[name]
        rows.append(
            (
                f"8. dashboard series of a {section['points']:,}-point job, {label} (p50/p95)",
                f"{latency['p50_ms']} / {latency['p95_ms']} ms",
                f"/healthz p50 {floor['p50_ms']} ms",
                f"x{round(latency['p50_ms'] / max(floor['p50_ms'], 0.01), 1)}",
                "p95 <= 500 ms",
                _met(latency["p95_ms"], 500.0),
            )
        )
    return rows


def _tools(section: dict[str, Any]) -> list[Row]:
    floor = section["in_process_tool"]
    rows: list[Row] = []
    for name, label in (("sandboxed_tool", "the calculator built-in"), ("environment_method", "an environment method")):
        latency = section[name]
        rows.append(
            (
                f"9. tool call in the sandbox, {label} (p50/p99, n={latency['n']})",
                f"{latency['p50_ms']} / {latency['p99_ms']} ms",
                f"the same call in the training process p50 {floor['p50_ms']} ms",
                f"+{round(latency['p50_ms'] - floor['p50_ms'], 3)} ms",
                "p99 < 5 ms",
                _met(latency["p99_ms"], 5.0),
            )
        )
    return rows


RENDERERS = {
    "overhead": _overhead,
    "dispatch": _dispatch,
    "metric_latency": _latency,
    "api_scale": _api,
    "ingest": _ingest,
    "memory": _memory,
    "preview": _preview,
    "series": _series,
    "tools": _tools,
}


def table(results: dict[str, Any]) -> str:
    run = results["run"]
    lines = [
        f"Run {run['date']} ({run['mode']}, `{run['command']}`, {run['seconds']} s) on {run['machine']}.",
        "",
        "| figure | measured | baseline, same run | ratio / extra | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for name, render in RENDERERS.items():
        if name in results:
            for figure, measured, baseline, ratio, target, met in render(results[name]):
                verdict = "" if met is None else ("yes" if met else "**no**")
                lines.append(f"| {figure} | {measured} | {baseline} | {ratio} | {target} | {verdict} |")
    return "\n".join(lines)


def render_markdown(results: dict[str, Any], path: Path) -> None:
    """Put the table between the markers of `path` (created with just the table if it does not exist)."""
    block = f"{START}\n{table(results)}\n{END}"
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + block + tail)
