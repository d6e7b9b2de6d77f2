"""Settings: the embedded defaults, and the values derived from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import Settings


def test_the_defaults_are_the_embedded_deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.data_dir == tmp_path / "grpo-data"  # made absolute, for child processes
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'grpo-data' / 'grpo.sqlite'}"
    assert settings.effective_broker_url == f"sqla+sqlite:///{tmp_path / 'grpo-data' / 'broker.sqlite'}"
    assert settings.is_embedded_broker
    assert settings.effective_metrics_flush_interval == 0.1


def test_settings_come_from_grpo_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPO_DATABASE_URL", "postgresql+psycopg://u@db/grpo")
    monkeypatch.setenv("GRPO_BROKER_URL", "redis://redis:6379/0")
    settings = Settings()
    assert not settings.is_embedded_broker
    # Each write to Postgres wakes its server processes: flushed less often than SQLite (see BENCHMARKS.md).
    assert settings.effective_metrics_flush_interval == 0.25
    monkeypatch.setenv("GRPO_METRICS_FLUSH_INTERVAL", "0.5")
    assert Settings().effective_metrics_flush_interval == 0.5
