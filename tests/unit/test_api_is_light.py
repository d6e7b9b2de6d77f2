"""The API process never imports the training stack: it must start fast and stay small."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ["torch", "trl", "transformers", "datasets", "accelerate", "peft"]


def test_creating_the_api_and_validating_a_spec_imports_no_training_stack(tmp_path: Path) -> None:
    code = f"""
import json, sys
from api.app import create_app
from shared.settings import Settings
from shared.spec.job import parse_spec
app = create_app(Settings(data_dir={str(tmp_path)!r}))
app.openapi()
seed = json.load(open({str(Path("examples/seed_job.json").resolve())!r}))
parse_spec(seed)
parse_spec({{**seed, "peft_config": {{"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}}}})
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
