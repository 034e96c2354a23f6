"""The job runner: runs queued jobs (facesvc.services.jobs) in the background.

:class:`JobRunner`, one per worker, claims queued jobs one at a time and processes their
photos a few at a time (the models batch concurrent photos), through the same services as
the routes. Each photo's result (a versioned record: facesvc.services.job_results) is
committed with the job's progress, and its bytes are erased, in one transaction: a photo is
processed once, whatever crashes.

A running job is leased: its runner renews ``heartbeat_at`` while it works. A job whose
lease ran out (its worker died) is queued again by any runner and resumes where it stopped;
a worker that stops cleanly hands its job back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import erase_deleted_after_commit, session_scope
from facesvc.db.models import Job, JobItem, JobState, utcnow
from facesvc.errors import ImageError, QueueFullError, ServiceError
from facesvc.gallery.backend import Gallery
from facesvc.observability.request_id import bind_request_id, unbind_request_id
from facesvc.repositories.jobs import JobRepository
from facesvc.repositories.keys import ApiKeyRepository
from facesvc.security.crypto import EmbeddingCipher
from facesvc.security.keys import Caller
from facesvc.services.analysis import FaceAnalysisService
from facesvc.services.enrolment import EnrolmentOptions, EnrolmentService
from facesvc.services.job_results import DetectedRecord, EnrolledRecord, FailedRecord

log = logging.getLogger(__name__)

# Photos analysed at once: enough for the models to batch them; an enrol photo also holds
# a database connection while it is analysed, hence fewer.
BATCH_SIZE = {"detect": 8, "enrol": 4}
LEASE_S = 30.0  # a running job whose heartbeat is older was left by a dead worker
BUSY_BACKOFF_S = 1.0  # the models' queues are full (the API has priority): wait, retry
ERROR_BACKOFF_S = 2.0  # the database failed the runner's own bookkeeping
INTERNAL_ERROR = "internal error while running the job (the service log has the details)"


@dataclass(frozen=True)
class _Claimed:
    id: uuid.UUID
    kind: str
    user_id: uuid.UUID | None
    caller: Caller
    request_id: str | None

    @classmethod
    def of(cls, job: Job) -> _Claimed:
        caller = Caller(
            tenant_id=job.tenant_id,
            key_id=job.key_id,
            actor=job.actor,
            scopes=frozenset(job.scopes.split()),
        )
        return cls(job.id, job.kind, job.user_id, caller, job.request_id)


class _JobLostError(Exception):
    """The job stopped being this runner's (cancelled, deleted, taken over): roll back."""


class JobRunner:
    """Runs queued jobs in this worker, one at a time, until stopped."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        analysis: FaceAnalysisService,
        gallery: Gallery,
        cipher: EmbeddingCipher,
        *,
        poll_interval_s: float = 0.2,
        lease_s: float = LEASE_S,
        enrolment: EnrolmentOptions | None = None,
    ) -> None:
        self.enrolment = enrolment or EnrolmentOptions()
        self.sessionmaker = sessionmaker
        self.analysis = analysis
        self.gallery = gallery
        self.cipher = cipher
        self.poll_interval_s = poll_interval_s
        self.lease_s = lease_s
        self.runner_id = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Set before the task is cancelled: a cancellation that lands inside a database call
        # can come out as the driver's error instead of CancelledError.
        self._stopping = False
        self._running_job: uuid.UUID | None = None

    def wake(self) -> None:
        """A job was created in this worker: look for it now rather than at the next poll."""
        self._wake.set()

    def start(self, models_ready: Callable[[], Awaitable[bool]]) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self.run(models_ready), name="job-runner")

    async def stop(self) -> None:
        """Stop at once: the photo being processed is rolled back and stays queued, and the
        job goes back to the queue for the next worker (or the next start)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        running = self._running_job
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if running is not None:
            # handed back here, once the cancelled batch has rolled back: from inside the
            # cancelled task it could meet that batch's write lock (seen on a loaded machine)
            await self._release(running, attempts=3)

    async def run(self, models_ready: Callable[[], Awaitable[bool]]) -> None:
        if not await models_ready():
            log.error("job runner not started: the models failed to load")
            return
        log.info("job runner %s started", self.runner_id)
        loop = asyncio.get_running_loop()
        next_recovery = 0.0
        while not self._stopping:
            try:
                if loop.time() >= next_recovery:
                    await self.requeue_stale()
                    next_recovery = loop.time() + self.lease_s / 2
                self._wake.clear()
                job = await self.claim_next()
            except Exception:  # a database outage must not end the runner
                if self._stopping:
                    return
                log.exception("job runner: could not look for work")
                await asyncio.sleep(ERROR_BACKOFF_S)
                continue
            if job is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval_s):
                        await self._wake.wait()
                continue
            await self.run_job(job)

    async def requeue_stale(self) -> int:
        """Queue again the running jobs whose runner stopped renewing its lease."""
        before = utcnow() - timedelta(seconds=self.lease_s)
        async with session_scope(self.sessionmaker) as session:
            jobs = JobRepository(session)
            stale = await jobs.stale_ids(before)
            requeued = [job_id for job_id in stale if await jobs.requeue_stale(job_id, before)]
        for job_id in requeued:
            log.warning("job %s: its worker stopped; queued again", job_id)
        return len(requeued)

    async def claim_next(self) -> _Claimed | None:
        async with session_scope(self.sessionmaker) as session:
            candidates = await JobRepository(session).queued_ids(limit=5)
        for job_id in candidates:
            async with session_scope(self.sessionmaker) as session:
                job = await JobRepository(session).claim(job_id, self.runner_id, utcnow())
                if job is not None:
                    return _Claimed.of(job)
        return None

    async def run_job(self, job: _Claimed) -> None:
        self._running_job = job.id
        try:
            await self._run_job(job)
        finally:
            self._running_job = None

    async def _run_job(self, job: _Claimed) -> None:
        token = bind_request_id(job.request_id or f"job-{job.id.hex}")  # in logs and audit
        heartbeat = asyncio.create_task(self._keep_lease(job.id), name=f"job-lease-{job.id}")
        try:
            log.info("job %s (%s) running", job.id, job.kind)
            while await self._renew(job.id):
                async with session_scope(self.sessionmaker) as session:
                    key_id = job.caller.key_id
                    revoked = key_id is not None and await ApiKeyRepository(session).is_revoked(
                        key_id
                    )
                    if not revoked:
                        items = await JobRepository(session).pending_items(
                            job.id, BATCH_SIZE[job.kind]
                        )
                        batch = [(item.id, self._image_of(item)) for item in items]
                if revoked:  # a revoked key's work stops with it
                    await self._finish(
                        job.id, JobState.CANCELLED, "the API key that created it was revoked"
                    )
                    return
                if not batch:
                    await self._finish(job.id, JobState.SUCCEEDED)
                    return
                if job.kind == "enrol":
                    busy = await self._enrol(job, batch)
                else:
                    busy = await self._detect(job.id, batch)
                if busy:
                    await asyncio.sleep(BUSY_BACKOFF_S)
        except asyncio.CancelledError:
            raise  # stop() hands the job back once this batch has rolled back
        except Exception as exc:
            await self._after_error(job.id, exc)
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            unbind_request_id(token)

    async def _after_error(self, job_id: uuid.UUID, exc: Exception) -> None:
        if self._stopping:  # a cancellation that surfaced as a driver error: stop() hands back
            return
        elif isinstance(exc, _JobLostError):
            log.info("job %s was cancelled or taken over", job_id)
        elif isinstance(exc, OperationalError | InterfaceError):  # database away or busy
            log.warning("job %s: database unavailable; handed back", job_id, exc_info=exc)
            await self._release(job_id)
            await asyncio.sleep(ERROR_BACKOFF_S)
        else:
            # A bug, or a photo that does not decrypt: retrying would fail the same way.
            log.error("job %s failed", job_id, exc_info=exc)
            with contextlib.suppress(Exception):
                if await self._renew(job_id):
                    await self._finish(job_id, JobState.FAILED, INTERNAL_ERROR)

    def _image_of(self, item: JobItem) -> bytes:
        if item.image is None:
            raise RuntimeError(f"job item {item.id} is pending but has no photo")
        return self.cipher.decrypt(item.image, item.key_id, item.id)

    async def _detect(self, job_id: uuid.UUID, batch: list[tuple[uuid.UUID, bytes]]) -> bool:
        outcomes = await asyncio.gather(
            *(self.analysis.analyse(data) for _, data in batch), return_exceptions=True
        )
        busy = False
        for (item_id, _), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, QueueFullError):
                busy = True  # stays pending: the next round takes it again
                continue
            if isinstance(outcome, ServiceError | ImageError):
                failed, result = True, FailedRecord.of(outcome).stored()
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                failed, result = False, DetectedRecord.of(outcome).stored()
            async with session_scope(self.sessionmaker) as session:
                await self._store(session, job_id, item_id, failed=failed, result=result)
        return busy

    async def _enrol(self, job: _Claimed, batch: list[tuple[uuid.UUID, bytes]]) -> bool:
        if job.user_id is None:
            raise RuntimeError(f"enrol job {job.id} has no user")
        user_id = job.user_id

        async def one(item_id: uuid.UUID, data: bytes) -> bool:
            """Enrol one photo and count it in one transaction; True: the models were busy."""
            try:
                async with session_scope(self.sessionmaker) as session:
                    enrolment = EnrolmentService(
                        session, self.analysis, self.gallery, job.caller, self.enrolment
                    )
                    try:
                        face = await enrolment.enrol(user_id, data, consent=True)
                    except (ServiceError, ImageError) as error:  # raised before any write
                        failed, result = True, FailedRecord.of(error).stored()
                    else:
                        failed, result = False, EnrolledRecord.of(face).stored()
                    await self._store(session, job.id, item_id, failed=failed, result=result)
            except QueueFullError:
                return True
            except _JobLostError:
                pass  # rolled back: the face is not stored either
            return False

        # Every photo's transaction ends before an error is raised (gather alone would
        # leave the others running).
        outcomes = await asyncio.gather(
            *(one(item_id, data) for item_id, data in batch), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return any(outcomes)

    async def _store(
        self,
        session: AsyncSession,
        job_id: uuid.UUID,
        item_id: uuid.UUID,
        *,
        failed: bool,
        result: dict[str, Any],
    ) -> None:
        stored = await JobRepository(session).finish_item(
            job_id, self.runner_id, item_id, failed=failed, result=result, now=utcnow()
        )
        if not stored:
            raise _JobLostError(str(job_id))

    async def _renew(self, job_id: uuid.UUID) -> bool:
        async with session_scope(self.sessionmaker) as session:
            return await JobRepository(session).renew(job_id, self.runner_id, utcnow())

    async def _keep_lease(self, job_id: uuid.UUID) -> None:
        """Renew the lease while a slow batch runs (each stored photo renews it too)."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self._renew(job_id)
            except Exception:  # the next renewal may succeed; the lease has slack
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    return  # cancelled inside the database call
                log.warning("job %s: could not renew the lease", job_id, exc_info=True)

    async def _finish(self, job_id: uuid.UUID, state: JobState, error: str | None = None) -> None:
        async with session_scope(self.sessionmaker) as session:
            jobs = JobRepository(session)
            now = utcnow()
            if await jobs.finish(job_id, self.runner_id, state, now, error):
                await jobs.drop_pending(job_id, now)  # a failed job's photos: erased
                erase_deleted_after_commit(session)
        log.info("job %s %s", job_id, state)

    async def _release(self, job_id: uuid.UUID, attempts: int = 1) -> None:
        for attempt in range(attempts):
            try:
                async with session_scope(self.sessionmaker) as session:
                    await JobRepository(session).release(job_id, self.runner_id)
                return
            except Exception:  # its lease runs out instead, and another runner resumes it
                if attempt + 1 == attempts:
                    log.warning("job %s: could not hand back on shutdown", job_id, exc_info=True)
                else:
                    await asyncio.sleep(0.2)
