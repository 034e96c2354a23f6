"""Async jobs: detection or enrolment of many photos, run in the background."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Query, Response, UploadFile, status

from facesvc.api.deps import (
    BINARY_FILES,
    CallerDep,
    Consent,
    SessionDep,
    StateDep,
    current_caller,
    read_uploads,
    refuse_if_start_up_failed,
    require_enrol,
)
from facesvc.api.problems import problem_responses
from facesvc.api.schemas import JobOut, JobPage
from facesvc.db.models import Job
from facesvc.services.jobs import MAX_JOB_IMAGES, JobService

router = APIRouter(
    prefix="/v1/jobs",
    tags=["jobs"],
    dependencies=[Depends(current_caller)],
    responses=problem_responses(401, 403),
)

JobId = Annotated[
    uuid.UUID, Path(description="The job's id (from create_detect_job or create_enrol_job)")
]
Images = Annotated[
    list[UploadFile],
    File(
        description=f"1 to {MAX_JOB_IMAGES} photos (field `images`), each at most "
        "FACESVC_MAX_UPLOAD_BYTES; the whole request at most FACESVC_MAX_REQUEST_BYTES",
        json_schema_extra=BINARY_FILES,
    ),
]
EnrolUserId = Annotated[
    uuid.UUID,
    Form(
        description="The user (of your tenant) the faces are added to, from create_user",
        examples=["6c7f2e0a-5b1d-4f8e-9a3c-2d4b6e8f0a1c"],
    ),
]
ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted and queued: follow Location (GET /v1/jobs/{id}) for progress",
        "headers": {
            "Location": {"description": "The job's URL", "schema": {"type": "string"}},
        },
    }
}


async def get_jobs(session: SessionDep, state: StateDep, caller: CallerDep) -> JobService:
    runner = state.job_runner
    return JobService(session, state.cipher, caller, on_created=runner.wake if runner else None)


JobServiceDep = Annotated[JobService, Depends(get_jobs)]


async def models_not_failed(state: StateDep) -> None:
    """Jobs are accepted while the models load (they wait), not when loading failed."""
    refuse_if_start_up_failed(state)


async def read_images(state: StateDep, images: Images) -> list[bytes]:
    return await read_uploads(images, state, MAX_JOB_IMAGES)


ImagesBytes = Annotated[list[bytes], Depends(read_images)]


def _accepted(job: Job, response: Response) -> JobOut:
    response.headers["Location"] = f"{router.prefix}/{job.id}"
    return JobOut.of(job)


@router.post(
    "/detect",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="create_detect_job",
    summary="Detect the faces in up to 500 photos, in the background",
    responses={**ACCEPTED, **problem_responses(400, 413, 422, 503)},
    dependencies=[Depends(models_not_failed)],
)
async def create_detect_job(images: ImagesBytes, jobs: JobServiceDep, response: Response) -> JobOut:
    """Answers 202 at once with the queued job; GET its `Location` until `state` is final.
    Each photo's faces (as POST /v1/detect answers), or its problem, are in `items` then.
    Any valid key."""
    return _accepted(await jobs.create_detect(images), response)


@router.post(
    "/enrol",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="create_enrol_job",
    summary="Enrol up to 500 photos of one user, in the background",
    responses={**ACCEPTED, **problem_responses(400, 404, 413, 422, 503)},
    dependencies=[Depends(require_enrol), Depends(models_not_failed)],
)
async def create_enrol_job(
    images: ImagesBytes,
    user_id: EnrolUserId,
    consent: Consent,
    jobs: JobServiceDep,
    response: Response,
) -> JobOut:
    """Each photo is enrolled as POST /v1/users/{id}/faces would (one clear face, audited as
    your key) and succeeds or fails on its own. 404 `user-not-found` for an unknown user,
    422 `consent-required` unless `consent` is true. Needs the enrol scope."""
    return _accepted(await jobs.create_enrol(user_id, images, consent=consent), response)


@router.get(
    "",
    operation_id="list_jobs",
    summary="List your tenant's jobs, newest first",
    responses=problem_responses(422),
)
async def list_jobs(
    jobs: JobServiceDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page")] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Jobs to skip")] = 0,
) -> JobPage:
    rows, total = await jobs.page(limit, offset)
    return JobPage(items=[JobOut.of(job) for job in rows], total=total, limit=limit, offset=offset)


@router.get(
    "/{job_id}",
    operation_id="get_job",
    summary="A job's state and progress, and its results once finished",
    responses=problem_responses(404, 422),
)
async def get_job(job_id: JobId, jobs: JobServiceDep) -> JobOut:
    job = await jobs.get(job_id)
    return JobOut.of(job, await jobs.items(job) if job.state.is_final else None)


@router.delete(
    "/{job_id}",
    operation_id="cancel_job",
    summary="Cancel a queued or running job",
    responses=problem_responses(404, 409, 422),
)
async def cancel_job(job_id: JobId, jobs: JobServiceDep) -> JobOut:
    """Photos not processed yet are never processed, and are erased; photos already
    processed keep their results (enrolled faces stay enrolled). 409 `job-finished` for a
    job that has already succeeded or failed; cancelling a cancelled job changes nothing."""
    job = await jobs.cancel(job_id)
    return JobOut.of(job, await jobs.items(job))
