"""The FastAPI application: `create_app(settings)` wires the routes to one database and one Celery app."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.auth import KeyFirst
from api.deps import Services
from api.errors import install_error_handlers
from api.hosts import AllowedHosts
from api.ratelimit import RateLimits
from api.routes import (
    access,
    audit,
    checkpoints,
    dashboard,
    files,
    health,
    jobs,
    operators,
    rewards,
    secrets,
    stream,
    tools,
    watching,
)
from shared.queue import make_celery
from shared.settings import Settings, load_settings
from shared.store.db import Database

DESCRIPTION = """
GRPO fine-tuning as a service. POST a job spec (`GRPOTrainer`'s own arguments as JSON), then poll
`GET /v1/jobs/{id}/metrics?after_step=N` to watch `reward`, `reward_std`, `kl` and everything else TRL logs.
Follow a job live with `GET /v1/jobs/{id}/stream` (Server-Sent Events), read what the model writes with
`GET /v1/jobs/{id}/samples`, or open the dashboard at `/`. Upload prompt datasets with `POST /v1/files`; try
reward functions on completions with `POST /v1/rewards/preview` before spending GPU time. Operators: `/metrics`
(Prometheus) and `GET /v1/workers`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for these settings (read from the environment when not given)."""
    settings = settings or load_settings()
    app = FastAPI(title="GRPO training service", version="0.1.0", description=DESCRIPTION)
    app.state.services = Services(
        settings=settings, database=Database.from_settings(settings), celery=make_celery(settings)
    )
    app.state.rate_limits = RateLimits(settings)  # one set of counters per app: see api/ratelimit.py
    install_error_handlers(app)
    # Added last, run first: the Host check, then the key, then the route.
    app.add_middleware(KeyFirst)
    app.add_middleware(AllowedHosts, allowed=settings.allowed_hosts)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(checkpoints.router)
    app.include_router(stream.router)
    app.include_router(watching.router)
    app.include_router(files.router)
    app.include_router(rewards.router)
    app.include_router(tools.router)
    app.include_router(operators.router)
    app.include_router(access.router)
    app.include_router(secrets.router)
    app.include_router(audit.router)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=dashboard.STATIC_DIR), name="static")
    return app
