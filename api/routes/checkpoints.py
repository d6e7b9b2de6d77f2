"""/v1/jobs/{id}/checkpoints: a job's saved checkpoints and final model, listed and downloaded as tar archives."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.archive import tar_stream
from api.auth import Reader, require_visible_job
from api.deps import ServicesDep
from api.errors import ApiError, not_found
from api.schemas import CheckpointList, ErrorBody
from api.views import JSONText
from shared.store.checkpoints import get_checkpoint, read_checkpoints

router = APIRouter(prefix="/v1/jobs", tags=["checkpoints"])


@router.get("/{job_id}/checkpoints", response_model=CheckpointList, responses={404: {"model": ErrorBody}})
def list_checkpoints(job_id: str, svc: ServicesDep, caller: Reader) -> JSONText:
    """A job's checkpoints (`checkpoint-<step>`) and, once it succeeded, its final model (`final`): step, time,
    size, the attempt that saved it and the metrics logged at that step."""
    with svc.database.reading() as connection:
        require_visible_job(connection, job_id, caller)
        items = read_checkpoints(connection, job_id)
    return JSONText(f'{{"data":[{",".join(items)}]}}')


@router.get(
    "/{job_id}/checkpoints/{name}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}}}, 404: {"model": ErrorBody}},
)
def download_checkpoint(job_id: str, name: str, svc: ServicesDep, caller: Reader) -> StreamingResponse:
    """A checkpoint (`checkpoint-40`, or just `40`) or the final model (`final`) as an uncompressed tar stream,
    ready for `from_pretrained` (or for `resume_from_checkpoint`) once unpacked."""
    checkpoint_name = f"checkpoint-{name}" if name.isdigit() else name
    with svc.database.reading() as connection:
        require_visible_job(connection, job_id, caller)
    with svc.database.session() as session:
        checkpoint = get_checkpoint(session, job_id, checkpoint_name)
    if checkpoint is None:
        raise not_found(f"checkpoint {checkpoint_name} of job {job_id}")
    path = Path(checkpoint.path)
    if not path.is_dir():
        raise ApiError(
            410,
            "gone",
            f"the files of {checkpoint_name} are not on this API's disk ({path}): they were deleted, or the API "
            "does not share GRPO_DATA_DIR with the workers",
        )
    archive = f"{job_id}-{checkpoint_name}"
    return StreamingResponse(
        tar_stream(path, archive),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{archive}.tar"'},
    )
