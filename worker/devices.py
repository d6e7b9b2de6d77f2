"""What hardware a worker has, asked of torch in a short-lived process: the worker itself must not initialise CUDA
(its training children are forked from a forkserver, and a CUDA context does not survive a fork)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from shared.settings import Settings

PROBE = """
import json, torch
found = {"cuda_devices": 0, "gpus": [], "bf16": False}
if torch.cuda.is_available():
    count = torch.cuda.device_count()
    found["cuda_devices"] = count
    for index in range(count):
        properties = torch.cuda.get_device_properties(index)
        found["gpus"].append({"index": index, "name": properties.name, "memory_mb": properties.total_memory // 2**20})
    found["bf16"] = bool(torch.cuda.is_bf16_supported())
print(json.dumps(found))
"""
PROBE_SECONDS = 120


def detect_devices(settings: Settings) -> dict[str, Any]:
    """`{"cuda_devices": N, "gpus": [{index, name, memory_mb}], "bf16": ..., "cpus": ..., "device": ...}`; a worker
    told `GRPO_DEVICE=cpu` reports no GPU without asking."""
    found: dict[str, Any] = {"cuda_devices": 0, "gpus": [], "bf16": False}
    if settings.device != "cpu":
        try:
            result = subprocess.run(
                [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=PROBE_SECONDS, check=True
            )
            found = json.loads(result.stdout.strip().splitlines()[-1])
        except (subprocess.SubprocessError, ValueError, IndexError) as error:
            found["probe_error"] = f"{type(error).__name__}: {error}"
    return {**found, "cpus": os.cpu_count(), "device": settings.device}
