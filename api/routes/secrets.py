"""/v1/secrets: a project's credentials (HF_TOKEN, WANDB_API_KEY, ...), set and deleted by its members, listed by
name to its viewers; write-only: no answer holds a value (see `shared.access.secrets`).

A key acts on its own project; an admin key may name another with `?project=`. A service with no key to encrypt
with (no GRPO_SECRET_KEY, no <data dir>/secret-key) answers a set with 409 `secrets_not_configured`: the request is
sound and the service's state stands in its way until the operator adds a key. Not a 5xx: nothing failed, and
retrying would not help, which a 503 tells clients and load balancers to do. Listing and deleting need no key (a
secret set under a lost key can still be removed).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from api.auth import Reader, Writer
from api.deps import ServicesDep
from api.errors import ApiError
from api.schemas import ErrorBody
from api.secret_schemas import SecretDeleted, SecretIn, SecretList, SecretOut
from shared.access.keys import Identity, Role
from shared.access.secrets import SecretRefused, delete_secret, list_secrets, secret_cipher, set_secret

router = APIRouter(prefix="/v1/secrets", tags=["secrets"])
ANSWERS = {
    "invalid": (422, "invalid_request"),
    "missing": (404, "not_found"),
    "unconfigured": (409, "secrets_not_configured"),
}
ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
    422: {"model": ErrorBody},
}
ProjectQuery = Annotated[
    str | None,
    Query(max_length=64, description="An admin key's choice of project (default, and for any other key: its own)."),
]


def _refused(error: SecretRefused) -> ApiError:
    status, kind = ANSWERS[error.reason]
    return ApiError(status, kind, str(error))


def _project(caller: Identity, project: str | None) -> str:
    """The project a request acts on: the key's own, or for an admin key the one it names."""
    if project is None or project == caller.project:
        return caller.project
    if caller.role != Role.ADMIN:
        raise ApiError(
            403,
            "forbidden",
            f"a {caller.role.value} key acts on its own project ({caller.project}): leave out `project` (only an "
            "admin key names another)",
        )
    return project


@router.post("", status_code=201, response_model=SecretOut, responses={200: {"model": SecretOut}, **ERRORS})
def post_secret(
    body: SecretIn, response: Response, svc: ServicesDep, caller: Writer, project: ProjectQuery = None
) -> SecretOut:
    """Set a secret of the project: `201` when it is new, `200` when its value is replaced. Its value is stored
    encrypted and is never shown again; a job gets it in its training process's environment by naming it in its
    spec (`"secrets": ["HF_TOKEN"]`)."""
    where = _project(caller, project)
    try:
        cipher = secret_cipher(svc.settings)
        with svc.database.session() as session:
            row, created = set_secret(
                session, cipher, where, body.name, body.value.get_secret_value(), by=caller.key_prefix
            )
            answer = SecretOut.model_validate(row)
    except SecretRefused as error:
        raise _refused(error) from None
    if not created:
        response.status_code = 200
    return answer


@router.get("", response_model=SecretList, responses=ERRORS)
def get_secrets(svc: ServicesDep, caller: Reader, project: ProjectQuery = None) -> SecretList:
    """The project's secrets by name, with when and by whom each was set last; never a value."""
    where = _project(caller, project)
    try:
        with svc.database.session() as session:
            return SecretList(data=[SecretOut.model_validate(row) for row in list_secrets(session, where)])
    except SecretRefused as error:
        raise _refused(error) from None


@router.delete("/{name}", response_model=SecretDeleted, responses=ERRORS)
def remove_secret(name: str, svc: ServicesDep, caller: Writer, project: ProjectQuery = None) -> SecretDeleted:
    """Delete a secret of the project. A queued job that names it fails when it starts, saying so."""
    where = _project(caller, project)
    try:
        with svc.database.session() as session:
            delete_secret(session, where, name, by=caller.key_prefix)
    except SecretRefused as error:
        raise _refused(error) from None
    return SecretDeleted(project=where, name=name)
