"""Rewards and datasets through the whole service: an uploaded JSONL file trained on with weighted rewards whose
per-reward metrics reach the metrics endpoint; a JSONL file and a save_to_disk folder's split on the worker's disk
trained and evaluated on, and a Hub dataset the offline worker cannot fetch; a reward model; and reward functions
that break out of their sandbox (of a service whose environment holds secrets) each failing their own job while the
worker goes on to the next."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from tests.processes import Service, base_env
from tests.specs import job_spec, python_reward

QUESTIONS = [
    {"question": "What is 2+2?", "solution": "4"},
    {"question": "What is 3+3?", "solution": "6"},
    {"question": "Say a number.", "solution": "7"},
    {"question": "What is 1+1?", "solution": "2"},
]
SHORT = python_reward(
    "def brevity(completions, **kwargs):\n    return [-len(c) / 10 for c in completions]\n", name="short"
)
FLAKY = python_reward(
    "def flaky(completions, trainer_state, **kwargs):\n"
    "    if trainer_state.global_step % 2:\n"
    "        raise RuntimeError('the grader is down')\n"
    "    return [1.0 for c in completions]\n",
    on_error="zero",
)


def test_an_uploaded_jsonl_trains_with_weighted_rewards_and_per_reward_metrics(
    production_service: Service, tiny_model: Path
) -> None:
    service = production_service
    content = "".join(json.dumps(row) + "\n" for row in QUESTIONS).encode()
    response = service.http.post(
        "/v1/files", files={"file": ("questions.jsonl", content)}, data={"column_map": '{"question": "prompt"}'}
    )
    assert response.status_code == 201, response.text
    file_id = response.json()["id"]
    spec = job_spec(
        tiny_model,
        train_dataset={"file_id": file_id, "column_map": {"solution": "answer"}},
        reward_funcs=[{"type": "builtin", "name": "accuracy"}, SHORT, FLAKY],
    )
    spec["args"].update(reward_weights=[2.0, 0.5, 0.0], max_steps=6)
    job = service.submit(spec)
    assert service.http.delete(f"/v1/files/{file_id}").status_code == 409  # the job needs it

    final = service.wait_finished(job["id"])
    assert final["status"] == "succeeded", f"{final['error']}\n{service.logs()}"
    points = service.all_metrics(job["id"])
    assert [p["step"] for p in points] == list(range(1, 7))
    for point in points:
        metrics = point["metrics"]
        for name in ("accuracy", "short", "flaky"):
            assert {f"rewards/{name}/mean", f"rewards/{name}/std"} <= metrics.keys(), metrics
        assert metrics["rewards/short/mean"] < 0  # -len/10: the completions are not empty
        # TRL's reward is the weighted sum of the rewards (the flaky one weighs nothing).
        weighted = 2.0 * metrics["rewards/accuracy/mean"] + 0.5 * metrics["rewards/short/mean"]
        assert metrics["reward"] == pytest.approx(weighted, rel=1e-4, abs=1e-4)
    # The flaky reward raised when trainer_state.global_step was odd (it is the step before the one logged): its
    # 4 completions scored 0.0 and were counted, instead of failing the job.
    errors = {p["step"]: p["metrics"]["rewards/flaky/errors"] for p in points}
    flaky_means = {p["step"]: p["metrics"]["rewards/flaky/mean"] for p in points}
    assert all(errors[s] == 4 and flaky_means[s] == 0.0 for s in (2, 4, 6)), (errors, flaky_means)
    assert all(errors[s] == 0 and flaky_means[s] == 1.0 for s in (1, 3, 5)), (errors, flaky_means)
    assert service.http.delete(f"/v1/files/{file_id}").status_code == 200  # the job is done with it


# Each prompt says where it comes from, and so does its `answer` column (after the column maps): a reward that scores
# the source shows which dataset, which split and which columns reached the trainer, row by row.
ORIGIN = python_reward(
    "def origin(prompts, answer, **kwargs):\n"
    "    scores = {'jsonl': 1.0, 'disk-train': 2.0, 'disk-test': 3.0}\n"
    "    return [scores[a] if p.startswith(a + ':') else -100.0 for p, a in zip(prompts, answer)]\n"
)


def test_jobs_train_from_a_jsonl_path_and_a_save_to_disk_split(
    embedded_service: Service, tiny_model: Path, tmp_path: Path
) -> None:
    from datasets import Dataset, DatasetDict

    jsonl = tmp_path / "questions.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"question": f"jsonl: {q['question']}", "solution": "jsonl"}) + "\n" for q in QUESTIONS)
    )
    folder = tmp_path / "saved"
    DatasetDict(
        {
            split: Dataset.from_list([{"q": f"disk-{split}: {q['question']}", "a": f"disk-{split}"} for q in QUESTIONS])
            for split in ("train", "test")
        }
    ).save_to_disk(str(folder))
    from_disk = {"path": str(folder), "split": "test", "column_map": {"q": "prompt", "a": "answer"}}

    # A JSONL file with a column_map to train on, the folder's test split to evaluate on.
    spec = job_spec(
        tiny_model,
        train_dataset={"path": str(jsonl), "column_map": {"question": "prompt", "solution": "answer"}},
        eval_dataset=from_disk,
        reward_funcs=[ORIGIN],
    )
    spec["args"].update(eval_strategy="steps", eval_steps=4, per_device_eval_batch_size=4)
    jsonl_job = embedded_service.submit(spec)
    # The folder's test split (not its default, train) to train on.
    disk_job = embedded_service.submit(job_spec(tiny_model, train_dataset=from_disk, reward_funcs=[ORIGIN]))
    # And a dataset on the Hub, which this offline worker cannot fetch.
    hub_job = embedded_service.submit(job_spec(tiny_model, train_dataset={"hub": "openai/gsm8k", "name": "main"}))

    for job in (jsonl_job, disk_job):
        final = embedded_service.wait_finished(job["id"])
        assert final["status"] == "succeeded", f"{final['error']}\n{embedded_service.logs()}"
    points = embedded_service.all_metrics(jsonl_job["id"])
    assert [p["step"] for p in points] == list(range(1, 9))
    assert all(p["metrics"]["rewards/origin/mean"] == 1.0 for p in points), points  # every prompt from the file
    evaluated = {p["step"]: p["metrics"]["eval_rewards/origin/mean"] for p in points if "eval_reward" in p["metrics"]}
    assert evaluated == {4: 3.0, 8: 3.0}  # every eval prompt from the folder's test split
    disk_points = embedded_service.all_metrics(disk_job["id"])
    assert [p["step"] for p in disk_points] == list(range(1, 9))
    assert all(p["metrics"]["rewards/origin/mean"] == 3.0 for p in disk_points), disk_points

    hub_final = embedded_service.wait_finished(hub_job["id"])
    assert hub_final["status"] == "failed"
    assert hub_final["error"].startswith(
        "loading train_dataset: train_dataset.hub 'openai/gsm8k' (name 'main', split 'train') could not be loaded "
        "from the Hugging Face Hub: ConnectionError: Couldn't reach 'openai/gsm8k' on the Hub (OfflineModeIsEnabled): "
        "this worker cannot reach the Hugging Face Hub"
    ), hub_final["error"]
    assert "Traceback" not in hub_final["error"]
    (error_event,) = [e for e in embedded_service.events(hub_job["id"]) if e["kind"] == "error"]
    assert "ConnectionError" in error_event["data"]["traceback"]  # the traceback is kept, in the job's events


def test_a_reward_model_scores_completions(
    embedded_service: Service, tiny_model: Path, tiny_reward_model: Path
) -> None:
    spec = job_spec(tiny_model, reward_funcs=[{"type": "model", "model": str(tiny_reward_model)}])
    final = embedded_service.wait_finished(embedded_service.submit(spec)["id"])
    assert final["status"] == "succeeded", f"{final['error']}\n{embedded_service.logs()}"
    points = embedded_service.all_metrics(final["id"])
    assert len(points) == 8
    means = [p["metrics"]["rewards/tiny-judge/mean"] for p in points]
    assert all(isinstance(m, float) for m in means)
    assert len(set(means)) > 1  # a real model's scores of different completions, not a constant


SECRET = "hf_secret-token-the-rewards-must-not-see"
ESCAPES = {
    "socket": (
        "    import socket\n    socket.create_connection(('127.0.0.1', 5432))\n",
        "raised SandboxViolation: sandboxed code (rewards, tools, environments) has no network access",
    ),
    "environment": (
        "    import os\n    return [float(len(os.environ['GRPO_DATABASE_URL'])) for c in completions]\n",
        "raised KeyError: 'GRPO_DATABASE_URL'",
    ),
    "whole_environment": (  # any variable whose name or value gives away the service's settings or a token
        "    import os\n"
        "    seen = sorted(k for k, v in os.environ.items() if 'GRPO' in k or 'TOKEN' in k or {secret!r} in v or "
        "{database_url!r} in v)\n"
        "    raise RuntimeError('saw ' + repr(seen) + ' among ' + str(len(os.environ)) + ' variables')\n",
        "raised RuntimeError: saw [] among ",
    ),
    "parent_environment": (
        "    import os\n    open(f'/proc/{os.getppid()}/environ').read()\n",
        "raised SandboxViolation: sandboxed code may not read /proc/",
    ),
    "outside_file": (  # the service's own database
        "    open({data_dir!r} + '/grpo.sqlite', 'rb').read()\n",
        "raised SandboxViolation: sandboxed code may not read {data_dir}/grpo.sqlite",
    ),
    "forever": ("    while True:\n        pass\n", "did not return within 3 s (the sandbox's limit per call"),
    "memory": (
        "    block = bytearray(4 * 2**30)\n    return [0.0 for c in completions]\n",
        "raised MemoryError: out of memory (the sandbox allows 2048 MiB)",
    ),
}


def test_rewards_that_break_out_of_the_sandbox_fail_clearly_and_the_worker_runs_the_next_job(
    tmp_path: Path, tiny_model: Path
) -> None:
    data_dir = str(tmp_path / "data")
    # The service's secrets are set, as in production: the database URL explicitly, and a token.
    database_url = f"sqlite:///{data_dir}/grpo.sqlite"
    env = base_env(tmp_path / "data", reward_timeout_seconds="3", database_url=database_url)
    env["HF_TOKEN"] = SECRET
    service = Service(env, tmp_path)
    try:
        migrate = service.start(["migrate"], "migrate")  # a database set explicitly is migrated first
        assert migrate.process.wait(timeout=60) == 0, migrate.log()
        up = service.start_api("up")
        up.wait_for_log("ready.")
        # The worker, whose training processes start the sandboxes, has them in its environment.
        (worker,) = [p for p in psutil.Process(up.process.pid).children() if "worker" in p.cmdline()]
        assert worker.environ()["GRPO_DATABASE_URL"] == database_url and worker.environ()["HF_TOKEN"] == SECRET
        values = {"{data_dir!r}": repr(data_dir), "{secret!r}": repr(SECRET), "{database_url!r}": repr(database_url)}
        escapes = {}
        for name, (body, expected) in ESCAPES.items():
            for placeholder, value in values.items():
                body = body.replace(placeholder, value)
            escapes[name] = (body, expected.replace("{data_dir}", data_dir))
        jobs = {
            name: service.submit(
                job_spec(tiny_model, reward_funcs=[python_reward(f"def {name}(completions, **kwargs):\n{body}")])
            )
            for name, (body, _) in escapes.items()
        }
        good = service.submit(job_spec(tiny_model))
        for name, (_, expected) in escapes.items():
            final = service.wait_finished(jobs[name]["id"])
            assert final["status"] == "failed", final
            assert final["error"].startswith(f"training: reward function {name!r} "), final["error"]
            assert expected in final["error"], final["error"]
        good_final = service.wait_finished(good["id"])
        assert good_final["status"] == "succeeded", f"{good_final['error']}\n{service.logs()}"
        assert [p["step"] for p in service.all_metrics(good["id"])] == list(range(1, 9))
    finally:
        service.stop()
