"""The web dashboard in real headless Chromium (Debian's `chromium`, driven by Playwright) against a real embedded
service: submit a job from the page, watch its reward chart fill, read its samples, see a bad spec's errors next
to their fields, clone a job, cancel another with the button, filter the list by label, and open a job of 100,000
points downsampled. Screenshots go to `test-artifacts/dashboard/`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import insert

from shared.store.db import Database
from shared.store.models import MetricPoint, utcnow
from tests.conftest import FAST_LIFECYCLE, ROOT
from tests.processes import Service, base_env
from tests.specs import job_spec, python_reward

ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
# As the machine's own probe starts it: no sandbox as root, and no background connections this network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SLOW = python_reward(
    "import time\ndef slow(completions, **kwargs):\n    time.sleep(0.2)\n    return [0.0 for _ in completions]\n"
)


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "the dashboard tests need Chromium: install Debian's `chromium` package (apt-get install chromium); "
            "`make test` installs it where it runs as root"
        )
    return found


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("dashboard")
    running = Service(base_env(root / "data", **FAST_LIFECYCLE), root)
    try:
        running.start_api("up")
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, service: Service, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A browser page signed in as `grpo up`'s user: through the link it prints (`/login?key=...`)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("dialog", lambda dialog: dialog.accept())  # the cancel button asks for confirmation
    opened.goto(f"{service.url}/login?key={service.key}")
    yield opened
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    opened.screenshot(path=str(ARTIFACTS / f"{request.node.name}-end.png"), full_page=True)
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def chart_points(page: Page, key: str) -> int:
    return int(page.locator(f'.chart[data-key="{key}"]').get_attribute("data-points") or 0)


def test_submit_a_job_watch_its_reward_chart_fill_and_read_its_samples(
    service: Service, page: Page, tiny_model: Path
) -> None:
    spec = job_spec(tiny_model, name="from the dashboard", metadata={"suite": "dashboard"})
    spec["reward_funcs"].append(SLOW)
    spec["args"]["max_steps"] = 20
    page.goto(f"{service.url}/#/submit")
    page.locator("#spec").fill(json.dumps(spec, indent=2))
    page.locator("#submit-spec").click()
    page.wait_for_url("**/#/jobs/job-*")
    job_id = page.url.rsplit("/", 1)[-1]
    expect(page.locator("#job-head h1")).to_contain_text("from the dashboard")

    # The reward chart fills live (the stream), up to every step the job logged.
    page.wait_for_function(
        "() => Number(document.querySelector('.chart[data-key=\"reward\"]')?.dataset.points || 0) >= 3",
        timeout=120_000,
    )
    shot(page, "job-running")
    page.wait_for_function("() => document.body.dataset.streamEnded === 'true'", timeout=120_000)
    expect(page.locator("#job-head .status")).to_have_text("succeeded")
    assert service.job(job_id)["status"] == "succeeded"
    for key in ("reward", "reward_std", "kl", "rewards/length/mean", "rewards/slow/mean", "loss"):
        assert chart_points(page, key) == 20, key
    shot(page, "job-succeeded")

    page.locator("#tab-samples").click()
    expect(page.locator(".sample-row").first).to_be_visible()
    assert page.locator(".sample-row").count() == 4  # the generation batch (8 would be kept: GRPO_SAMPLES_PER_STEP)
    assert page.locator("#sample-step").input_value() == "20"
    headers = page.locator("#samples th").all_inner_texts()
    assert [h.lower() for h in headers] == ["#", "prompt", "completion", "length", "slow", "advantage"]
    shot(page, "job-samples")

    page.locator("#tab-events").click()
    expect(page.locator("#events li").first).to_be_visible()
    expect(page.locator("#events")).to_contain_text("job queued")
    expect(page.locator("#events")).to_contain_text("succeeded")
    assert page.locator("#events li").count() == len(service.events(job_id))

    # The job list: its row, status, and a reward sparkline; the label filter keeps it.
    page.goto(f"{service.url}/#/?metadata=suite=dashboard")
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row).to_be_visible()
    expect(row.locator(".status")).to_have_text("succeeded")
    page.wait_for_function(
        f"() => Number(document.querySelector('tr[data-job=\"{job_id}\"] svg.spark')?.dataset.points || 0) > 1"
    )
    assert page.locator("tr.job-row").count() == 1
    shot(page, "job-list-filtered")


def test_a_bad_spec_shows_each_error_next_to_its_field_and_a_job_can_be_cloned(
    service: Service, page: Page, tiny_model: Path
) -> None:
    spec = job_spec(tiny_model)
    spec["args"]["num_generations"] = 3  # 4 is not divisible by 3
    spec["args"]["num_generation"] = 4  # not a GRPOConfig field
    page.goto(f"{service.url}/#/submit")
    page.locator("#spec").fill(json.dumps(spec))
    page.locator("#submit-spec").click()
    batch = page.locator('.field.has-error[data-field="args.per_device_train_batch_size"]')
    expect(batch).to_contain_text("must be divisible by args.num_generations (3)")
    expect(page.locator('.field.has-error[data-field="args.num_generation"]')).to_contain_text("num_generations")
    expect(page.locator('.field[data-field="args.beta"]')).not_to_have_class("field has-error")
    assert page.url.endswith("#/submit")  # nothing was submitted
    shot(page, "submit-errors")

    # YAML is a spec too; a missing field is shown where it would go.
    page.locator("#spec").fill(
        "train_dataset:\n  rows:\n    - prompt: hi\nreward_funcs:\n  - type: builtin\n    name: length\n"
    )
    page.locator("#submit-spec").click()
    expect(page.locator('.field.has-error[data-field="model"]')).to_contain_text("model is required")

    # Clone and edit: an existing job's spec, ready to change and submit again.
    original = service.submit(job_spec(tiny_model, name="original"))
    page.goto(f"{service.url}/#/jobs/{original['id']}")
    page.locator("#clone-job").click()
    page.wait_for_url("**/#/submit?from=*")
    cloned: dict[str, Any] = json.loads(page.locator("#spec").input_value())
    assert cloned["name"] == "original (clone)" and cloned["args"] == original["spec"]["args"]
    page.locator("#submit-spec").click()
    page.wait_for_url("**/#/jobs/job-*")
    assert page.url.rsplit("/", 1)[-1] != original["id"]


def test_the_cancel_button_cancels_a_running_job(service: Service, page: Page, tiny_model: Path) -> None:
    spec = job_spec(tiny_model, name="to cancel")
    spec["reward_funcs"].append(SLOW)
    spec["args"]["max_steps"] = 5000
    job = service.submit(spec)
    service.wait_until(job["id"], lambda j: j["status"] == "running" and (j["latest_step"] or 0) >= 1)
    page.goto(f"{service.url}/#/jobs/{job['id']}")
    expect(page.locator("#job-head .status")).to_have_text("running")
    page.locator("#cancel-job").click()
    expect(page.locator("#job-head .status")).to_have_text("cancelled", timeout=10_000)
    expect(page.locator("#cancel-job")).to_be_disabled()
    assert service.wait_finished(job["id"], timeout=10)["status"] == "cancelled"
    shot(page, "job-cancelled")


def test_a_job_of_100000_points_opens_downsampled_and_zooms_to_full_resolution(
    service: Service, page: Page, tiny_model: Path
) -> None:
    spec = job_spec(tiny_model, name="long run")
    spec["args"]["max_steps"] = 1
    job = service.submit(spec)
    service.wait_finished(job["id"])
    # A long run's history, written straight into the service's database (training 100,000 steps would take an hour).
    database = Database(f"sqlite:///{Path(service.env['GRPO_DATA_DIR']) / 'grpo.sqlite'}")
    try:
        with database.session() as session:
            session.execute(
                insert(MetricPoint),
                [
                    {
                        "job_id": job["id"],
                        "step": step,
                        "epoch": step / 1000,
                        "metrics": {"reward": (step % 1000) / 1000, "kl": 0.01, "loss": 0.1},
                        "logged_at": utcnow(),
                    }
                    for step in range(2, 100_001)
                ],
            )
    finally:
        database.dispose()
    page.goto(f"{service.url}/#/jobs/{job['id']}")
    reward = page.locator('.chart[data-key="reward"]')
    expect(reward).to_have_attribute("data-resolution", "overview", timeout=30_000)
    points = chart_points(page, "reward")
    assert 500 <= points <= 1000  # the server sent a thousand buckets, not 100,000 points
    page.wait_for_timeout(1000)  # the live stream starts after the newest step shown: it adds nothing
    assert chart_points(page, "reward") == points
    shot(page, "long-run-overview")

    # Dragging across a part of the chart fetches that range again: 5% of the run is still downsampled (5,000
    # steps), 10% of that (500 steps) comes at full resolution.
    plot = reward.locator(".u-over")

    def drag(start: float, end: float) -> None:
        box = plot.bounding_box()
        assert box is not None
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * start, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * end, y, steps=5)
        page.mouse.up()

    drag(0.50, 0.55)
    expect(reward).to_have_attribute("data-resolution", "zoomed-overview", timeout=30_000)
    drag(0.40, 0.50)
    expect(reward).to_have_attribute("data-resolution", "full", timeout=30_000)
    zoomed = chart_points(page, "reward")
    assert 100 <= zoomed <= 1000
    shot(page, "long-run-zoomed")
    reward.locator("button").click()  # reset zoom
    expect(reward).to_have_attribute("data-resolution", "overview")


def test_the_dashboard_asks_for_a_key_and_the_link_grpo_up_prints_signs_in(browser: Browser, service: Service) -> None:
    context = browser.new_context()
    try:
        opened = context.new_page()
        first = opened.goto(f"{service.url}/")
        assert first is not None and first.status == 401
        assert opened.locator("input[name=key]").count() == 1  # the sign-in form, no dashboard
        wrong = opened.goto(f"{service.url}/login?key=grpo_not-a-key")
        assert wrong is not None and wrong.status == 401 and "not valid" in opened.content()
        printed = next(line for line in service.processes[0].log().splitlines() if "/login?key=" in line)
        link = printed.split("(this link signs you in): ", 1)[1].strip()  # the whole link on one line
        assert link.endswith(f"/login?key={service.key}")
        signed_in = opened.goto(link)
        assert signed_in is not None and signed_in.status == 200 and opened.url == f"{service.url}/"
        session = next(c for c in context.cookies() if c["name"] == "grpo_session")
        assert session["httpOnly"] and session["sameSite"] == "Strict"
    finally:
        context.close()
