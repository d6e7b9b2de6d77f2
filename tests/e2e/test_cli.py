"""The `grpo` client commands against a running embedded service, and the README's demo command itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import Service, base_env
from tests.specs import job_spec

ROOT = Path(__file__).resolve().parents[2]


def grpo(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        env={**(env or os.environ), "COLUMNS": "200"},
        timeout=timeout,
    )


def test_submit_watch_prints_every_step_and_exits_zero(
    embedded_service: Service, tiny_model: Path, tmp_path: Path
) -> None:
    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps(job_spec(tiny_model)))
    submitted = grpo("submit", str(spec_file), "--url", embedded_service.url, "--watch", env=embedded_service.env)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    lines = submitted.stdout.splitlines()
    job_id = lines[0].strip()
    assert re.fullmatch(r"job-[0-9a-f]{16}", job_id)
    assert "reward" in lines[1] and "reward_std" in lines[1] and "kl" in lines[1]
    rows = [line.split() for line in lines if re.match(r"\s+\d+\s", line)]
    assert [int(r[0]) for r in rows] == list(range(1, 9))
    assert f"job {job_id} succeeded" in submitted.stdout

    # Watching a finished job prints its whole history again, with the mean completion length of every step.
    watched = grpo("watch", job_id, "--url", embedded_service.url, env=embedded_service.env)
    assert watched.returncode == 0
    watched_lines = watched.stdout.splitlines()
    header = next(line.split() for line in watched_lines if "reward_std" in line)
    assert header == ["step", "reward", "reward_std", "kl", "length", "loss"]
    watched_rows = [line.split() for line in watched_lines if re.match(r"\s+\d+\s", line)]
    assert [int(r[0]) for r in watched_rows] == list(range(1, 9))
    lengths = {p["step"]: p["metrics"]["completions/mean_length"] for p in embedded_service.all_metrics(job_id)}
    assert [float(r[header.index("length")]) for r in watched_rows] == [
        pytest.approx(lengths[s], rel=1e-3) for s in range(1, 9)
    ]
    assert all(0 < lengths[s] <= 8 for s in lengths)  # max_completion_length is 8


def test_submit_of_a_bad_spec_prints_each_problem_and_exits_two(embedded_service: Service, tmp_path: Path) -> None:
    spec = job_spec("m")
    spec["args"]["num_generation"] = 4
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(json.dumps(spec))  # JSON is YAML
    result = grpo("submit", str(spec_file), "--url", embedded_service.url, env=embedded_service.env)
    assert result.returncode == 2
    assert "did you mean 'num_generations'?" in result.stderr


def test_watch_of_a_failed_job_exits_one(embedded_service: Service, tiny_model: Path) -> None:
    job = embedded_service.submit(job_spec(str(tiny_model) + "-missing"))
    embedded_service.wait_finished(job["id"])
    result = grpo("watch", job["id"], "--url", embedded_service.url, env=embedded_service.env)
    assert result.returncode == 1
    assert "job failed: finding the model" in result.stderr


def test_tiny_model_writes_a_model_and_tokenizer_that_transformers_loads(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    env = base_env(tmp_path / "data")
    written = grpo("tiny-model", str(tmp_path / "tiny"), env=env)
    assert written.returncode == 0, written.stdout + written.stderr
    assert f"tiny model written to {tmp_path / 'tiny'}" in " ".join(written.stdout.split())

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tiny")
    assert model.config.model_type == "qwen2" and model.config.num_hidden_layers == 2
    assert sum(p.numel() for p in model.parameters()) < 100_000  # tiny: trains at CPU speed
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    inputs = tokenizer(prompt, return_tensors="pt")
    assert tokenizer.decode(inputs["input_ids"][0]) == prompt  # the tokenizer round-trips its chat format
    generated = model.generate(**inputs, max_new_tokens=5, do_sample=True)
    assert generated.shape[1] > inputs["input_ids"].shape[1]

    judged = grpo("tiny-model", str(tmp_path / "judge"), "--reward-model", env=env)
    assert judged.returncode == 0, judged.stdout + judged.stderr
    assert f"tiny reward model written to {tmp_path / 'judge'}" in " ".join(judged.stdout.split())
    judge = AutoModelForSequenceClassification.from_pretrained(tmp_path / "judge")
    judge_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "judge")
    assert judge.config.num_labels == 1
    with torch.no_grad():
        scores = judge(**judge_tokenizer(["Say hi.", "Hello!"], return_tensors="pt", padding=True)).logits
    assert scores.shape == (2, 1)


def test_a_database_that_cannot_be_opened_stops_serve_and_worker_with_a_readable_error(
    tmp_path: Path, postgres_server: str
) -> None:
    missing_folder = f"sqlite:///{tmp_path / 'no-such-folder' / 'grpo.sqlite'}"
    served = grpo("serve", "--port", "1", env=base_env(tmp_path / "data", database_url=missing_folder), timeout=60)
    assert served.returncode == 1
    assert " ".join(served.stderr.split()) == (
        f"error: cannot open the database at {missing_folder} (GRPO_DATABASE_URL): OperationalError: unable to open "
        "database file"
    )
    # A database that does not exist on a server; the password is not printed.
    scheme, rest = postgres_server.split("://", 1)
    user, host = rest.split("@", 1)
    url = f"{scheme}://{user.split(':')[0]}:hunter2@{host.rsplit('/', 1)[0]}/grpo_no_such_database"
    worker = grpo("worker", env=base_env(tmp_path / "data", database_url=url), timeout=60)
    assert worker.returncode == 1
    message = " ".join(worker.stderr.split())
    assert message.startswith("error: cannot open the database at "), message
    assert ":***@" in message and "hunter2" not in message
    assert "(GRPO_DATABASE_URL): OperationalError: connection failed: " in message and "Traceback" not in message


def test_the_readmes_demo_command_succeeds(tmp_path: Path) -> None:
    """`make demo`, as the README says, in a data dir of its own (the venv is the one the test run uses)."""
    env = base_env(tmp_path / "data")
    result = subprocess.run(["make", "-C", str(ROOT), "demo"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "job succeeded after 80 logged steps: mean reward" in " ".join(result.stdout.split())
    rows = [line.split() for line in result.stdout.splitlines() if re.match(r"\s+\d+\s", line)]
    assert [int(r[0]) for r in rows] == list(range(1, 81))
    rewards = [float(r[1]) for r in rows]
    assert sum(rewards[-16:]) / 16 > sum(rewards[:16]) / 16 + 3  # the demo shows learning
    assert all(r[3] != "-" for r in rows)  # kl on every step


def test_stopping_grpo_up_leaves_no_process_behind(tmp_path: Path) -> None:
    import psutil

    service = Service(base_env(tmp_path / "data"), tmp_path)
    try:
        up = service.start_api("up")
        up.wait_for_log("ready.")  # the worker is up, with its forkserver
        family = psutil.Process(up.process.pid).children(recursive=True)
        assert any("worker" in " ".join(p.cmdline()) for p in family)
        assert any("forkserver" in " ".join(p.cmdline()) for p in family)
        up.process.terminate()  # SIGTERM, as `docker stop` or a process manager sends
        assert up.process.wait(timeout=30) != 0
        _gone, alive = psutil.wait_procs(family, timeout=30)
        assert alive == [], [" ".join(p.cmdline()) for p in alive]
    finally:
        service.stop()
