"""/v1/projects and /v1/keys: the operators' routes (admin keys only), the same as `grpo projects` and `grpo keys`.

Each change is noted in the audit log (`GET /v1/audit`) naming the caller's key by its prefix."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.access_schemas import KeyCreated, KeyIn, KeyList, KeyOut, ProjectIn, ProjectLimitsIn, ProjectList, ProjectOut
from api.auth import Admin
from api.deps import ServicesDep
from api.errors import ApiError
from api.schemas import ErrorBody
from shared.access.keys import KeyRefused, create_key, list_keys, revoke_key
from shared.access.projects import ProjectLimits, ProjectRefused, create_project, list_projects, update_project

router = APIRouter(tags=["access"])
ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}, 409: {"model": ErrorBody}}


ANSWERS = {"missing": (404, "not_found"), "exists": (409, "conflict"), "invalid": (422, "invalid_request")}


def _refused(error: ProjectRefused | KeyRefused) -> ApiError:
    status, kind = ANSWERS[error.reason]
    return ApiError(status, kind, str(error))


@router.get("/v1/projects", response_model=ProjectList)
def get_projects(svc: ServicesDep, caller: Admin) -> ProjectList:
    """Every project and its limits."""
    with svc.database.session() as session:
        return ProjectList(data=[ProjectOut.model_validate(p) for p in list_projects(session)])


@router.post("/v1/projects", status_code=201, response_model=ProjectOut, responses=ERRORS)
def post_project(body: ProjectIn, svc: ServicesDep, caller: Admin) -> ProjectOut:
    """Create a project with limits on what it may use at once."""
    limits = ProjectLimits(**body.model_dump(exclude={"name"}))
    try:
        with svc.database.session() as session:
            return ProjectOut.model_validate(create_project(session, body.name, limits, by=caller.key_prefix))
    except ProjectRefused as error:
        raise _refused(error) from None


@router.patch("/v1/projects/{name}", response_model=ProjectOut, responses=ERRORS)
def patch_project(name: str, body: ProjectLimitsIn, svc: ServicesDep, caller: Admin) -> ProjectOut:
    """Change a project's limits: those in the body (null removes one); the others stay."""
    try:
        with svc.database.session() as session:
            project = update_project(session, name, body.model_dump(exclude_unset=True), by=caller.key_prefix)
            return ProjectOut.model_validate(project)
    except ProjectRefused as error:
        raise _refused(error) from None


@router.get("/v1/keys", response_model=KeyList)
def get_keys(svc: ServicesDep, caller: Admin, project: str | None = None) -> KeyList:
    """Every key by its prefix (never the key itself), newest first; of one project when asked."""
    with svc.database.session() as session:
        return KeyList(data=[KeyOut.model_validate(k) for k in list_keys(session, project)])


@router.post("/v1/keys", status_code=201, response_model=KeyCreated, responses=ERRORS)
def post_key(body: KeyIn, svc: ServicesDep, caller: Admin) -> KeyCreated:
    """Make a key: the answer holds it this once (the service keeps only its digest)."""
    try:
        with svc.database.session() as session:
            row, key = create_key(session, body.project, body.role, body.name, by=caller.key_prefix)
            return KeyCreated.model_validate({**KeyOut.model_validate(row).model_dump(), "key": key})
    except KeyRefused as error:
        raise _refused(error) from None


@router.post("/v1/keys/{prefix}/revoke", response_model=KeyOut, responses=ERRORS)
def post_revoke(prefix: str, svc: ServicesDep, caller: Admin) -> KeyOut:
    """Revoke a key: from now on it authenticates nothing (an API process may accept it for 5 more seconds)."""
    try:
        with svc.database.session() as session:
            return KeyOut.model_validate(revoke_key(session, prefix, by=caller.key_prefix))
    except KeyRefused as error:
        raise _refused(error) from None
