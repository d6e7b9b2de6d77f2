"""Rate limits: the GRPO_RATE_LIMIT_* settings as they are read (and refused) at startup, and the limiter's answers
on memory storage (the embedded default): the 429 past the limit, one caller not counting against another, and a
store that does not answer letting requests through."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.errors import ApiError
from api.ratelimit import Action, RateLimits
from shared.settings import Settings


def settings(tmp_path: Path, **values: str) -> Settings:
    return Settings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


def test_rate_limits_default_to_a_generous_limit_per_minute(tmp_path: Path) -> None:
    defaults = settings(tmp_path)
    assert (defaults.rate_limit_submit, defaults.rate_limit_preview, defaults.rate_limit_upload) == (
        "120/minute",
        "120/minute",
        "60/minute",
    )


@pytest.mark.parametrize("value", ["2/minute", "5 per 10 seconds", "10/second;500/hour", " 3/hour "])
def test_a_rate_limit_is_read_as_the_limits_library_writes_it(tmp_path: Path, value: str) -> None:
    assert settings(tmp_path, rate_limit_submit=value).rate_limit_submit == value.strip()


@pytest.mark.parametrize("value", ["off", "OFF", "", "  "])
def test_off_or_empty_disables_a_rate_limit(tmp_path: Path, value: str) -> None:
    assert settings(tmp_path, rate_limit_upload=value).rate_limit_upload is None


def test_a_rate_limit_is_read_from_its_grpo_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRPO_RATE_LIMIT_PREVIEW", "7/hour")
    monkeypatch.setenv("GRPO_RATE_LIMIT_UPLOAD", "off")
    read = Settings(data_dir=tmp_path)
    assert (read.rate_limit_preview, read.rate_limit_upload) == ("7/hour", None)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("rate_limit_submit", "lots", "is not a rate limit"),
        ("rate_limit_preview", "5/fortnight", "is not a rate limit"),
        ("rate_limit_upload", "10", "is not a rate limit"),
        ("rate_limit_submit", "0/minute", "allows nothing"),
    ],
)
def test_a_bad_rate_limit_is_refused_at_startup_naming_its_setting(
    tmp_path: Path, field: str, value: str, says: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        settings(tmp_path, **{field: value})
    message = str(refused.value)
    assert f"GRPO_{field.upper()}={value!r}" in message
    assert says in message


def test_the_counters_live_in_the_brokers_redis_else_in_memory(tmp_path: Path) -> None:
    assert settings(tmp_path).effective_rate_limit_storage_url == "memory://"  # the embedded default
    on_redis = settings(tmp_path, broker_url="redis://redis:6379/0")
    assert on_redis.effective_rate_limit_storage_url == "redis://redis:6379/0"
    chosen = settings(tmp_path, broker_url="redis://redis:6379/0", rate_limit_storage_url="redis://limits:6379/2")
    assert chosen.effective_rate_limit_storage_url == "redis://limits:6379/2"
    assert settings(tmp_path, broker_url="amqp://rabbit//").effective_rate_limit_storage_url == "memory://"


def test_a_rate_limit_store_of_another_kind_is_refused_without_echoing_its_password(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        settings(tmp_path, rate_limit_storage_url="mongodb://user:hunter2@db/limits")
    assert "GRPO_RATE_LIMIT_STORAGE_URL: 'mongodb' is not a store" in str(refused.value)


def test_the_request_past_the_limit_is_a_429_naming_the_limit_and_when_to_retry(tmp_path: Path) -> None:
    limits = RateLimits(settings(tmp_path, rate_limit_submit="2/minute"))
    limits.check(Action.SUBMIT, "key aaaa")
    limits.check(Action.SUBMIT, "key aaaa")
    with pytest.raises(ApiError) as refused:
        limits.check(Action.SUBMIT, "key aaaa")
    error = refused.value
    assert (error.status, error.type) == (429, "rate_limited")
    assert error.headers is not None and 1 <= int(error.headers["Retry-After"]) <= 60
    assert "key aaaa made 2 job submits in the last minute" in error.message
    assert "GRPO_RATE_LIMIT_SUBMIT=2/minute" in error.message


def test_each_caller_and_each_action_counts_alone(tmp_path: Path) -> None:
    limits = RateLimits(settings(tmp_path, rate_limit_submit="1/minute", rate_limit_upload="1/minute"))
    limits.check(Action.SUBMIT, "key aaaa")
    limits.check(Action.SUBMIT, "key bbbb")
    limits.check(Action.UPLOAD, "key aaaa")
    with pytest.raises(ApiError):
        limits.check(Action.SUBMIT, "key aaaa")


def test_every_window_of_a_limit_counts(tmp_path: Path) -> None:
    limits = RateLimits(settings(tmp_path, rate_limit_preview="5/second;2 per 10 minutes"))
    limits.check(Action.PREVIEW, "key aaaa")
    limits.check(Action.PREVIEW, "key aaaa")
    with pytest.raises(ApiError) as refused:
        limits.check(Action.PREVIEW, "key aaaa")
    assert "in the last 10 minutes" in refused.value.message
    assert int((refused.value.headers or {})["Retry-After"]) > 500


def test_a_limit_that_is_off_counts_nothing(tmp_path: Path) -> None:
    limits = RateLimits(settings(tmp_path, rate_limit_submit="off"))
    for _ in range(500):
        limits.check(Action.SUBMIT, "key aaaa")


def test_an_unreachable_redis_lets_requests_through_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 9: every call to the store fails at once.
    limits = RateLimits(
        settings(tmp_path, rate_limit_submit="1/minute", rate_limit_storage_url="redis://127.0.0.1:9/0")
    )
    with caplog.at_level(logging.WARNING, logger="api.ratelimit"):
        for _ in range(3):
            limits.check(Action.SUBMIT, "key aaaa")
    warnings = [r.getMessage() for r in caplog.records if r.name == "api.ratelimit"]
    assert len(warnings) == 1
    assert "rate limits not enforced" in warnings[0]
