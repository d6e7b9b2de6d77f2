"""/v1/audit: the audit log, for admin keys (every project): who changed keys, projects and their limits, secrets
and files. A job's own changes (submit, cancel, pause, resume) are that job's events, naming the key the same way."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.access_schemas import AuditEventOut, AuditPage
from api.auth import Admin
from api.deps import ServicesDep
from shared.access.audit import list_audit

router = APIRouter(tags=["access"])

# The widest id the column holds (BIGINT).
MAX_INT64 = 2**63 - 1


@router.get("/v1/audit", response_model=AuditPage)
def get_audit(
    svc: ServicesDep,
    caller: Admin,
    project: Annotated[str | None, Query(max_length=64, description="Only changes to this project.")] = None,
    after: Annotated[int, Query(ge=0, le=MAX_INT64, description="Return entries after this entry id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Entries per page.")] = 100,
) -> AuditPage:
    """The audit log, oldest first: each change with the key (by prefix) or `cli:<user>` that made it.

    Page through it with `after` = the last id seen; `has_more` says another page is ready now.
    """
    with svc.database.session() as session:
        page = list_audit(session, project, after=after, limit=limit)
        return AuditPage(data=[AuditEventOut.model_validate(row) for row in page.items], has_more=page.has_more)
