"""Async jobs: detection or enrolment of many photos, run in the background.

A job and its photos are stored before the request is answered (the photos encrypted like
embeddings, since they are biometric data), so accepted work survives a restart. The job
runner (facesvc.workers.job_runner) processes them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.engine import after_commit, erase_deleted_after_commit
from facesvc.db.models import ItemState, Job, JobItem, JobState, utcnow
from facesvc.errors import (
    JobFinishedError,
    JobNotFoundError,
)
from facesvc.observability.request_id import current_request_id
from facesvc.repositories.jobs import JobRepository
from facesvc.repositories.users import UserRepository
from facesvc.security.crypto import EmbeddingCipher
from facesvc.security.keys import Caller
from facesvc.services.enrolment import require_consent, require_user

MAX_JOB_IMAGES = 500


def _visible_kinds(caller: Caller) -> tuple[str, ...]:
    # Enrol jobs name users and faces, which only the enrol scope may see.
    return ("detect", "enrol") if caller.allows("enrol") else ("detect",)


class JobService:
    """The caller's tenant's jobs: create, read, list, cancel."""

    def __init__(
        self,
        session: AsyncSession,
        cipher: EmbeddingCipher,
        caller: Caller,
        on_created: Callable[[], None] | None = None,
    ) -> None:
        self.session = session
        self.cipher = cipher
        self.caller = caller
        self.jobs = JobRepository(session)
        self.on_created = on_created

    async def create_detect(self, images: Sequence[bytes]) -> Job:
        return await self._create("detect", images, None)

    async def create_enrol(
        self, user_id: uuid.UUID, images: Sequence[bytes], *, consent: bool
    ) -> Job:
        require_consent(consent)
        await require_user(UserRepository(self.session, self.caller.tenant_id), user_id)
        return await self._create("enrol", images, user_id)

    async def _create(
        self,
        kind: str,
        images: Sequence[bytes],
        user_id: uuid.UUID | None,
    ) -> Job:
        """The job and its photos, encrypted; it runs as (and is audited as) the caller."""
        caller = self.caller
        job = Job(
            id=uuid.uuid4(),
            tenant_id=caller.tenant_id,
            kind=kind,
            state=JobState.QUEUED,
            user_id=user_id,
            key_id=caller.key_id,
            actor=caller.actor,
            scopes=" ".join(sorted(caller.scopes)),
            request_id=current_request_id(),  # the job's audit rows carry it too
            total=len(images),
            done=0,
            failed=0,
            created_at=utcnow(),
        )
        items = []
        for position, data in enumerate(images):
            item_id = uuid.uuid4()
            sealed, key_id = self.cipher.encrypt(data, item_id)
            items.append(
                JobItem(
                    id=item_id,
                    job_id=job.id,
                    position=position,
                    state=ItemState.PENDING,
                    image=sealed,
                    key_id=key_id,
                )
            )
        await self.jobs.add(job, items)
        if self.on_created is not None:
            after_commit(self.session, self.on_created)  # the runner starts it at once
        return job

    async def get(self, job_id: uuid.UUID) -> Job:
        job = await self.jobs.get(self.caller.tenant_id, job_id, _visible_kinds(self.caller))
        if job is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return job

    async def items(self, job: Job) -> list[JobItem]:
        return await self.jobs.items(job.id)

    async def page(self, limit: int, offset: int) -> tuple[list[Job], int]:
        return await self.jobs.page(
            self.caller.tenant_id, _visible_kinds(self.caller), limit=limit, offset=offset
        )

    async def cancel(self, job_id: uuid.UUID) -> Job:
        """Cancel a queued or running job: photos not processed yet never will be, and are
        erased. Cancelling a cancelled job again changes nothing."""
        job = await self.get(job_id)
        if job.state == JobState.CANCELLED:
            return job
        cancelled = await self.jobs.cancel(job.id, utcnow())
        await self.session.refresh(job)  # a new state: mypy still narrows the one read above
        # it finished (or was cancelled) first
        if not cancelled and job.state != JobState.CANCELLED:  # type: ignore[comparison-overlap]
            raise JobFinishedError(f"job {job_id} has already {job.state}")
        erase_deleted_after_commit(self.session)
        return job
