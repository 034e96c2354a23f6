"""Background jobs: batches of photos to detect or enrol."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from facesvc.api.problems import Problem
from facesvc.api.schemas.analysis import DetectResponse
from facesvc.api.schemas.common import Page
from facesvc.api.schemas.users import FaceOut
from facesvc.db import models as db
from facesvc.db.models import ItemState, JobState
from facesvc.errors import problem_type
from facesvc.services.job_results import (
    DetectedRecord,
    EnrolledRecord,
    FailedRecord,
    stored_version,
)

JobKind = Literal["detect", "enrol"]
# The states as Literals of the enums' members rather than the enums themselves: the OpenAPI
# document keeps listing the values in place instead of naming a component for each (mypy
# refuses a member missing here, since a row's state is the whole enum).
JobStateValue = Literal[
    JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED
]
ItemStateValue = Literal[
    ItemState.PENDING, ItemState.SUCCEEDED, ItemState.FAILED, ItemState.CANCELLED
]


class JobItemOut(BaseModel):
    """One photo's outcome: ``detection`` (detect jobs) or ``face`` (enrol jobs) when it
    succeeded, else ``problem``."""

    index: int = Field(description="Position of the photo in the request", examples=[0])
    state: ItemStateValue = Field(
        description="cancelled: never processed (the job was cancelled or failed first)",
        examples=["succeeded"],
    )
    detection: DetectResponse | None = Field(
        default=None, description="Detect jobs: the faces found, as POST /v1/detect answers"
    )
    face: FaceOut | None = Field(default=None, description="Enrol jobs: the enrolled face")
    problem: Problem | None = Field(default=None, description="Why this photo failed")

    @classmethod
    def of(cls, kind: str, item: db.JobItem) -> JobItemOut:
        """A photo's outcome, rendered from the record the job runner stored
        (services/job_results.py) as the API answers today."""
        out = cls(index=item.position, state=item.state)
        result = item.result
        if result is None or item.state not in (ItemState.SUCCEEDED, ItemState.FAILED):
            return out
        failed = item.state == ItemState.FAILED
        if stored_version(result) == 0:  # stored before records: the API's JSON of the time
            if failed:
                out.problem = Problem.model_validate(result)
            elif kind == "detect":
                out.detection = DetectResponse.model_validate(result)
            else:
                out.face = FaceOut.model_validate(result)
        elif failed:
            out.problem = _problem_of(FailedRecord.model_validate(result))
        elif kind == "detect":
            out.detection = DetectResponse.of(DetectedRecord.model_validate(result).analysed())
        else:
            out.face = FaceOut.of(EnrolledRecord.model_validate(result).face())
        return out


def _problem_of(record: FailedRecord) -> Problem:
    """The problem a failed photo's record names, titled as the catalogue titles it now. A
    slug no longer in the catalogue (slugs are meant to stay: clients match on them) keeps
    its type and detail, titled by the slug, as the 422 of a photo that could not be used."""
    known = problem_type(record.slug)
    return Problem(
        type=f"/problems/{record.slug}",
        title=known.title if known is not None else record.slug,
        status=known.status if known is not None else 422,
        detail=record.detail,
    )


class JobOut(BaseModel):
    """A job's state and progress, and once it has finished, every photo's outcome."""

    id: uuid.UUID = Field(examples=["3f0c9a5e-2b7d-4c1a-8e6f-9d2b4a6c8e0f"])
    kind: JobKind = Field(description="detect or enrol", examples=["detect"])
    state: JobStateValue = Field(
        description="queued, running, then succeeded (every photo processed; each may still "
        "have failed on its own), failed (the job stopped: see `error`) or cancelled",
        examples=["running"],
    )
    total: int = Field(description="Photos in the job", examples=[120])
    done: int = Field(description="Photos processed so far, failed ones included", examples=[48])
    failed: int = Field(description="Processed photos that failed", examples=[2])
    percent: float = Field(description="done / total, in percent", examples=[40.0])
    user_id: uuid.UUID | None = Field(
        default=None,
        description="Enrol jobs: the user the faces are added to",
        examples=["6c7f2e0a-5b1d-4f8e-9a3c-2d4b6e8f0a1c"],
    )
    error: str | None = Field(default=None, description="Why a failed job stopped")
    created_at: datetime
    started_at: datetime | None = Field(
        default=None, description="When a worker first took the job"
    )
    finished_at: datetime | None = None
    items: list[JobItemOut] | None = Field(
        default=None,
        description="Every photo's outcome in request order, once the job has finished "
        "(null before, and in listings)",
    )

    @classmethod
    def of(cls, job: db.Job, items: list[db.JobItem] | None = None) -> JobOut:
        return cls(
            id=job.id,
            kind=job.kind,
            state=job.state,
            total=job.total,
            done=job.done,
            failed=job.failed,
            percent=round(100.0 * job.done / job.total, 1) if job.total else 100.0,
            user_id=job.user_id,
            error=job.error,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            items=None if items is None else [JobItemOut.of(job.kind, item) for item in items],
        )


class JobPage(Page[JobOut]):
    items: list[JobOut] = Field(description="Newest first, without per-photo outcomes")
    total: int = Field(description="Jobs in all pages", examples=[1])
    limit: int = Field(examples=[20])
    offset: int = Field(examples=[0])
