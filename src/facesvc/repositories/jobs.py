"""Jobs and their photos: SQL only (services/jobs.py and workers/job_runner.py give the meaning).

Every change of a job's state is one guarded ``UPDATE ... WHERE state = ...``: whichever
worker's statement matches first wins, on SQLite and PostgreSQL alike, so two workers never
claim the same job and a cancelled job takes no further result. Statements that lock both a
job and its items lock the job first (no deadlock between cancel and progress).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from facesvc.db.models import ItemState, Job, JobItem, JobState, UTCDateTime
from facesvc.security.crypto import EmbeddingCipher


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # --- the tenant's side: create, read, cancel -----------------------------------------

    async def add(self, job: Job, items: list[JobItem]) -> Job:
        self._session.add(job)
        await self._session.flush()  # the job row first: items refer to it
        self._session.add_all(items)
        await self._session.flush()
        return job

    async def get(
        self, tenant_id: uuid.UUID, job_id: uuid.UUID, kinds: Collection[str]
    ) -> Job | None:
        stmt = select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id, Job.kind.in_(kinds))
        return (await self._session.scalars(stmt)).one_or_none()

    async def page(
        self, tenant_id: uuid.UUID, kinds: Collection[str], *, limit: int, offset: int
    ) -> tuple[list[Job], int]:
        """Newest first."""
        where = (Job.tenant_id == tenant_id, Job.kind.in_(kinds))
        stmt = (
            select(Job)
            .where(*where)
            .order_by(Job.created_at.desc(), Job.id.desc())
            .limit(limit)
            .offset(offset)
        )
        jobs = list((await self._session.scalars(stmt)).all())
        total = await self._session.scalar(select(func.count()).select_from(Job).where(*where))
        return jobs, int(total or 0)

    async def items(self, job_id: uuid.UUID) -> list[JobItem]:
        """Every item in request order, without the photos."""
        stmt = (
            select(JobItem)
            .where(JobItem.job_id == job_id)
            .options(defer(JobItem.image, raiseload=True))
            .order_by(JobItem.position)
        )
        return list((await self._session.scalars(stmt)).all())

    async def cancel(self, job_id: uuid.UUID, now: datetime) -> bool:
        """Cancel a queued or running job and erase the photos not processed yet."""
        cancelled = await self._session.scalars(
            update(Job)
            .where(Job.id == job_id, Job.state.in_(JobState.active()))
            .values(state=JobState.CANCELLED, finished_at=now, runner_id=None)
            .returning(Job.id)
        )
        if cancelled.first() is None:
            return False
        await self.drop_pending(job_id, now)
        return True

    async def drop_pending(self, job_id: uuid.UUID, now: datetime) -> None:
        """The items not processed yet will never be: erase their photos."""
        await self._session.execute(
            update(JobItem)
            .where(JobItem.job_id == job_id, JobItem.state == ItemState.PENDING)
            .values(state=ItemState.CANCELLED, image=None, key_id=None, finished_at=now)
        )

    # --- the runner's side: claim, lease, progress ----------------------------------------

    async def queued_ids(self, limit: int) -> list[uuid.UUID]:
        """The oldest queued jobs (candidates: another worker may claim them first)."""
        stmt = (
            select(Job.id)
            .where(Job.state == JobState.QUEUED)
            .order_by(Job.created_at, Job.id)
            .limit(limit)
        )
        return list((await self._session.scalars(stmt)).all())

    async def claim(self, job_id: uuid.UUID, runner_id: str, now: datetime) -> Job | None:
        """The job, now running under ``runner_id``; None if it is no longer queued."""
        claimed = await self._session.scalars(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED)
            .values(
                state=JobState.RUNNING,
                runner_id=runner_id,
                heartbeat_at=now,
                started_at=func.coalesce(Job.started_at, literal(now, UTCDateTime())),
            )
            .returning(Job.id)
        )
        if claimed.first() is None:
            return None
        return await self._session.get(Job, job_id, populate_existing=True)

    async def stale_ids(self, heartbeat_before: datetime) -> list[uuid.UUID]:
        stmt = select(Job.id).where(
            Job.state == JobState.RUNNING, Job.heartbeat_at < heartbeat_before
        )
        return list((await self._session.scalars(stmt)).all())

    async def requeue_stale(self, job_id: uuid.UUID, heartbeat_before: datetime) -> bool:
        """Queue a running job again if its runner's lease ran out (its worker died)."""
        requeued = await self._session.scalars(
            update(Job)
            .where(
                Job.id == job_id, Job.state == JobState.RUNNING, Job.heartbeat_at < heartbeat_before
            )
            .values(state=JobState.QUEUED, runner_id=None)
            .returning(Job.id)
        )
        return requeued.first() is not None

    async def renew(self, job_id: uuid.UUID, runner_id: str, now: datetime) -> bool:
        """Extend the lease; False when the job is no longer this runner's (cancelled,
        deleted, or taken over after the lease ran out)."""
        renewed = await self._session.scalars(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.runner_id == runner_id)
            .values(heartbeat_at=now)
            .returning(Job.id)
        )
        return renewed.first() is not None

    async def release(self, job_id: uuid.UUID, runner_id: str) -> bool:
        """Hand a running job back to the queue (the worker is stopping)."""
        released = await self._session.scalars(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.runner_id == runner_id)
            .values(state=JobState.QUEUED, runner_id=None)
            .returning(Job.id)
        )
        return released.first() is not None

    async def pending_items(self, job_id: uuid.UUID, limit: int) -> list[JobItem]:
        """The next unprocessed items, photos included."""
        stmt = (
            select(JobItem)
            .where(JobItem.job_id == job_id, JobItem.state == ItemState.PENDING)
            .order_by(JobItem.position)
            .limit(limit)
        )
        return list((await self._session.scalars(stmt)).all())

    async def finish_item(
        self,
        job_id: uuid.UUID,
        runner_id: str,
        item_id: uuid.UUID,
        *,
        failed: bool,
        result: dict[str, Any],
        now: datetime,
    ) -> bool:
        """Count one processed item and store its result in place of its photo.

        False (and nothing to commit) when the job is no longer this runner's or the item
        was already processed: the caller rolls back whatever it did for the item."""
        counted = await self._session.scalars(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.runner_id == runner_id)
            .values(
                done=Job.done + 1,
                failed=Job.failed + (1 if failed else 0),
                heartbeat_at=now,
            )
            .returning(Job.id)
        )
        if counted.first() is None:
            return False
        stored = await self._session.scalars(
            update(JobItem)
            .where(JobItem.id == item_id, JobItem.state == ItemState.PENDING)
            .values(
                state=ItemState.FAILED if failed else ItemState.SUCCEEDED,
                result=result,
                image=None,
                key_id=None,
                finished_at=now,
            )
            .returning(JobItem.id)
        )
        return stored.first() is not None

    async def finish(
        self,
        job_id: uuid.UUID,
        runner_id: str,
        state: JobState,
        now: datetime,
        error: str | None = None,
    ) -> bool:
        finished = await self._session.scalars(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.runner_id == runner_id)
            .values(state=state, finished_at=now, error=error, runner_id=None)
            .returning(Job.id)
        )
        return finished.first() is not None

    async def reencrypt_pending_images(self, cipher: EmbeddingCipher) -> int:
        """Seal every photo still waiting in a job under the active data key (key rotation);
        returns how many changed. A photo is only ever sealed with its item id as the
        associated data, so it is re-sealed the same way."""
        stmt = select(JobItem).where(
            JobItem.image.is_not(None),
            or_(JobItem.key_id.is_(None), JobItem.key_id != cipher.active_key_id),
        )
        changed = 0
        for item in (await self._session.scalars(stmt)).all():
            if item.image is None:
                continue
            plain = cipher.decrypt(item.image, item.key_id, item.id)
            item.image, item.key_id = cipher.encrypt(plain, item.id)
            changed += 1
        await self._session.flush()
        return changed
