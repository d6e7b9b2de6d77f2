"""What a route needs from the app: its settings, database and Celery app (made once in `create_app`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request

from shared.settings import Settings
from shared.store.db import Database


@dataclass
class Services:
    settings: Settings
    database: Database
    celery: Celery


def services(request: Request) -> Services:
    """The app's services, for `Depends`."""
    found: Services = request.app.state.services
    return found


# What a route declares to get the services: `svc: ServicesDep`.
ServicesDep = Annotated[Services, Depends(services)]
