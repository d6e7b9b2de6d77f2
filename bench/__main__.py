"""`python -m bench [--smoke] [--only NAME,...]`: run the benchmarks, write bench/results.json and BENCHMARKS.md.

Every figure is measured beside its baseline in the same run (the machines are shared and noisy): bare TRL for
training, a bare Celery no-op task for dispatch, /healthz for the API and the dashboard's series, a bulk INSERT for
ingest, a bare Python start for the reward preview, polling for the live stream, an in-process call for a
sandboxed tool.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import api_scale, dispatch, ingest, memory, metric_latency, overhead, preview, series, tools
from bench.common import FULL, SMOKE, Sizes
from bench.report import render_markdown

SECTIONS: dict[str, Callable[[Sizes, Path], dict[str, Any]]] = {
    "overhead": overhead.run,
    "dispatch": dispatch.run,
    "metric_latency": metric_latency.run,
    "api_scale": api_scale.run,
    "ingest": ingest.run,
    "memory": memory.run,
    "preview": preview.run,
    "series": series.run,
    "tools": tools.run,
}
ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmarks still run")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated, of: {', '.join(SECTIONS)}")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    options = parser.parse_args(argv)
    chosen = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sizes = SMOKE if options.smoke else FULL
    results: dict[str, Any] = {
        "run": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "mode": "smoke" if options.smoke else "full",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "command": "make bench" if not options.smoke else "python -m bench --smoke",
        }
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as scratch:
        for name in chosen:
            section_started = time.monotonic()
            print(f"[bench] {name} ...", flush=True)
            results[name] = SECTIONS[name](sizes, Path(scratch))
            results[name]["seconds"] = round(time.monotonic() - section_started, 1)
            print(f"[bench] {name}: {json.dumps(results[name])}", flush=True)
    results["run"]["seconds"] = round(time.monotonic() - started, 1)
    if set(chosen) != set(SECTIONS) and options.results.exists():
        # A partial run replaces its own sections; the others stay as their last run measured them.
        earlier = json.loads(options.results.read_text())
        results = {**earlier, **{name: results[name] for name in chosen}}

    options.results.parent.mkdir(parents=True, exist_ok=True)
    options.results.write_text(json.dumps(results, indent=2) + "\n")
    render_markdown(results, options.markdown)
    print(f"[bench] wrote {options.results} and {options.markdown} in {results['run']['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
