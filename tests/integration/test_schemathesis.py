"""Schemathesis against a real `grpo serve` (embedded, no worker) with a member key: every operation of
/openapi.json, sent requests generated from the document itself (its examples, the boundaries of each parameter and
body field, then random valid and invalid values, then chains of calls that follow the document's links), and not
one answered with a server error, nor a traceback in the service's log.

The member's project holds a queued job, a cancelled job and an uploaded file, and the generated path parameters
name them most of the time (Schemathesis dictionaries), so that the requests reach the routes' own logic rather
than stopping at a 404. The live stream is only sent the cancelled job: a queued job's stream stays open by design.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.callers import Caller
from tests.processes import Service, base_env
from tests.specs import job_spec

# Examples per operation in the fuzzing phase, and the seed: a run is the same run every time (a failure's output
# names the seed and the request that failed, to reproduce it with `st run`).
MAX_EXAMPLES = 10
SEED = 12
# Each valid preview starts a reward sandbox and each submit checks a whole spec: their boundary cases (about 1,300
# together) are left to the fuzzing phase, which sends them MAX_EXAMPLES each, to keep the run within seconds.
HEAVY = ["POST /v1/jobs", "POST /v1/rewards/preview"]
# The command line `st`, run by the interpreter running the tests.
ST = "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"
# Where the API asks nothing of the key (so the member's key is never refused there).
UNRESTRICTED = "GET /v1/jobs"


def config_file(folder: Path, jobs: list[str], finished_job: str, files: list[str]) -> Path:
    """A schemathesis.toml that names the member's own jobs and files in generated paths."""
    text = f"""
[cache]
enabled = false

[dictionaries.jobs]
values = {json.dumps(jobs)}
[dictionaries.finished_jobs]
values = {json.dumps([finished_job])}
[dictionaries.files]
values = {json.dumps(files)}
[dictionaries.checkpoints]
values = ["final", "checkpoint-1", "1"]

[parameters]
"path.job_id" = {{ dictionary = "jobs", probability = 0.7 }}
"path.file_id" = {{ dictionary = "files", probability = 0.7 }}
"path.name" = {{ dictionary = "checkpoints", probability = 0.5 }}

[[operations]]
include-path = "/v1/jobs/{{job_id}}/stream"
parameters = {{ "path.job_id" = {{ dictionary = "finished_jobs", probability = 0.7 }} }}

[[operations]]
include-name = {json.dumps(HEAVY)}
phases.coverage.enabled = false
"""
    path = folder / "schemathesis.toml"
    path.write_text(text)
    return path


def operations(schema: dict[str, Any]) -> set[str]:
    """Every operation of an OpenAPI document, as Schemathesis names them (`GET /v1/jobs`)."""
    methods = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
    return {
        f"{method.upper()} {path}" for path, item in schema["paths"].items() for method in item if method in methods
    }


def test_no_operation_answers_a_member_with_a_server_error(tmp_path: Path) -> None:
    # The rate limits would answer most generated submits, previews and uploads with a 429 before their logic ran.
    limits_off = {"rate_limit_submit": "off", "rate_limit_preview": "off", "rate_limit_upload": "off"}
    service = Service(base_env(tmp_path / "data", **limits_off), tmp_path)
    try:
        service.start_api("serve")
        member = Caller(service, "member", service.make_key("alpha", "member"))
        queued, finished = member.submit(job_spec("/models/tiny")), member.submit(job_spec("/models/tiny"))
        assert member.post(f"/v1/jobs/{finished}/cancel").status_code == 200
        files = [member.upload(), member.upload()]
        config = config_file(tmp_path, [queued, finished], finished, files)
        schema = service.http.get("/openapi.json").json()
        report = tmp_path / "report.json"
        command = [
            *(sys.executable, "-c", ST, "--config-file", str(config), "run", f"{service.url}/openapi.json"),
            *("-H", f"Authorization: Bearer {member.key}", "--checks", "not_a_server_error"),
            *("--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1"),
            *("--generation-database", "none", "--request-timeout", "20", "--no-color"),
            *("--report", "json", "--report-json-path", str(report)),
        ]
        run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-12000:]

        summary = json.loads(report.read_text())
        documented = operations(schema)
        # A run that tested nothing (a schema that did not load, every operation filtered out) fails here.
        assert summary["operations"]["tested"] == summary["operations"]["selected"] == len(documented) > 0
        assert summary["test_cases"]["generated"] >= len(documented) * MAX_EXAMPLES
        assert summary["failures"] == [] and summary["errors"] == []
        assert {"examples", "coverage", "fuzzing", "stateful"} <= {
            phase for phase, result in summary["phases"].items() if result["status"] == "success"
        }
        # The key reached the routes: a member's reads were not refused as unauthenticated.
        assert UNRESTRICTED in documented and UNRESTRICTED not in summary["warnings"]["missing_auth"]
        assert "Traceback" not in service.logs(), service.logs()[-12000:]
    finally:
        service.stop()
