"""Liveness sessions: start one, send it frames, read it, and use a passed one to log in.

The rules are ``checker.LivenessChecker``'s; this module adds the clock, the database and
the models. A request's frames are analysed before anything is written (a bad frame fails
the request and changes nothing), then applied in one transaction guarded by the session's
version: what a session shows is always a whole request's outcome.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.db.models import LivenessSession, utcnow
from facesvc.errors import (
    LivenessFaceMismatchError,
    LivenessNotPassedError,
    LivenessSessionBusyError,
    LivenessSessionEndedError,
    LivenessSessionExpiredError,
    LivenessSessionNotFoundError,
    LivenessSessionUsedError,
    TooManyFramesError,
)
from facesvc.inference.pipeline import FacePipeline
from facesvc.repositories.liveness import LivenessRepository
from facesvc.security.crypto import EmbeddingCipher
from facesvc.security.keys import Caller
from facesvc.services.audit import AuditTrail
from facesvc.services.liveness.checker import (
    CHALLENGES,
    Challenge,
    FailureReason,
    FrameResult,
    LivenessChecker,
    LivenessProgress,
    LivenessThresholds,
    Status,
)
from facesvc.services.liveness.frames import observe_frame
from facesvc.settings import Settings

# Ended sessions (and the digests of their frames, which catch replays) are kept this long.
RETENTION = timedelta(days=7)


@dataclass(frozen=True)
class LivenessPolicy:
    """The operator's choices (FACESVC_LIVENESS_*)."""

    challenges: tuple[Challenge, ...] = ("turn_left", "turn_right", "open_mouth")
    count: int = 3
    ttl: timedelta = timedelta(seconds=180)
    max_frames: int = 60
    max_frames_per_request: int = 8
    thresholds: LivenessThresholds = field(default_factory=LivenessThresholds)
    required: bool = False
    min_similarity: float = 0.45  # raised to the 1:1 threshold if that is higher

    @classmethod
    def from_settings(cls, settings: Settings) -> LivenessPolicy:
        """Raises ValueError for an unknown challenge name or more challenges than offered."""
        names = [n.strip() for n in settings.liveness_challenges.split(",") if n.strip()]
        unknown = sorted(set(names) - set(CHALLENGES))
        if unknown or not names:
            raise ValueError(
                f"FACESVC_LIVENESS_CHALLENGES: {unknown or 'nothing'} is not among "
                f"{', '.join(CHALLENGES)}"
            )
        pool = tuple(c for c in CHALLENGES if c in names)
        if settings.liveness_challenge_count > len(pool):
            raise ValueError(
                f"FACESVC_LIVENESS_CHALLENGE_COUNT={settings.liveness_challenge_count} but "
                f"only {len(pool)} challenges are offered"
            )
        overrides = {
            name: getattr(settings, f"liveness_{name}")
            for name in (
                "eyes_closed_below",
                "eyes_open_above",
                "mouth_open_above",
                "mouth_closed_below",
                "turn_yaw_deg",
                "frontal_yaw_deg",
                "still_frames",
            )
            if getattr(settings, f"liveness_{name}") is not None
        }
        return cls(
            challenges=pool,
            count=settings.liveness_challenge_count,
            ttl=timedelta(seconds=settings.liveness_session_ttl_s),
            max_frames=settings.liveness_max_frames,
            max_frames_per_request=settings.liveness_max_frames_per_request,
            thresholds=LivenessThresholds(**overrides, min_live_score=settings.antispoof_min_live),
            required=settings.liveness_required,
            min_similarity=settings.liveness_min_similarity,
        )


@dataclass(frozen=True)
class LivenessView:
    """A session as the API shows it; ``frames_results`` only for the frames just sent."""

    id: uuid.UUID
    status: Status
    reason: FailureReason | None
    challenges: list[Challenge]
    done: int
    frames: int
    max_frames: int
    created_at: datetime
    expires_at: datetime
    used: bool
    frame_results: list[FrameResult] = field(default_factory=list)

    @property
    def current(self) -> Challenge | None:
        if self.status != "in_progress" or self.done >= len(self.challenges):
            return None
        return self.challenges[self.done]


def _status(row: LivenessSession, now: datetime) -> tuple[Status, FailureReason | None]:
    """A session still in progress, or passed but not used, at its expiry has expired."""
    if row.status != "failed" and row.used_at is None and now >= row.expires_at:
        return "expired", "expired"
    return row.status, row.reason  # type: ignore[return-value]


def _view(
    row: LivenessSession, policy: LivenessPolicy, now: datetime, results: list[FrameResult]
) -> LivenessView:
    progress = LivenessProgress.from_json(row.progress)
    status, reason = _status(row, now)
    return LivenessView(
        id=row.id,
        status=status,
        reason=reason,
        challenges=list(progress.challenges),
        done=progress.done,
        frames=progress.frames,
        max_frames=policy.max_frames,
        created_at=row.created_at,
        expires_at=row.expires_at,
        used=row.used_at is not None,
        frame_results=results,
    )


class LivenessService:
    """The caller's tenant's liveness sessions."""

    def __init__(
        self,
        session: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
        pipeline: FacePipeline,
        cipher: EmbeddingCipher,
        policy: LivenessPolicy,
        caller: Caller,
        min_similarity: float,
    ) -> None:
        self.session = session
        self.sessionmaker = sessionmaker
        self.pipeline = pipeline
        self.cipher = cipher
        self.policy = policy
        self.caller = caller
        # never below the 1:1 threshold the login itself uses
        same_person = max(min_similarity, policy.min_similarity)
        self.checker = LivenessChecker(policy.thresholds, same_person, policy.max_frames)
        self.repo = LivenessRepository(session, cipher)

    def draw_challenges(self) -> list[Challenge]:
        """``count`` different challenges in a random order (a CSPRNG: not predictable)."""
        pool = list(self.policy.challenges)
        secrets.SystemRandom().shuffle(pool)
        return pool[: self.policy.count]

    async def create(self) -> LivenessView:
        now = utcnow()
        tenant = self.caller.tenant_id
        await self.repo.purge_ended_before(tenant, now - RETENTION)
        progress = LivenessProgress(challenges=self.draw_challenges())
        row = await self.repo.add(
            LivenessSession(
                id=uuid.uuid4(),
                tenant_id=tenant,
                status="in_progress",
                progress=progress.as_json(),
                model_name=self.pipeline.embedding_space,
                version=0,
                created_at=now,
                expires_at=now + self.policy.ttl,
            )
        )
        return _view(row, self.policy, now, [])

    async def get(self, session_id: uuid.UUID) -> LivenessView:
        row = await self.repo.get(self.caller.tenant_id, session_id)
        if row is None:
            raise LivenessSessionNotFoundError(f"no liveness session {session_id}")
        return _view(row, self.policy, utcnow(), [])

    async def _open_row(self, repo: LivenessRepository, session_id: uuid.UUID) -> LivenessSession:
        row = await repo.get(self.caller.tenant_id, session_id)
        if row is None:
            raise LivenessSessionNotFoundError(f"no liveness session {session_id}")
        status, _ = _status(row, utcnow())
        if status != "in_progress":
            raise LivenessSessionEndedError(
                f"the session has ended ({status}): it takes no more frames", session_status=status
            )
        return row

    async def add_frames(self, session_id: uuid.UUID, frames: list[bytes]) -> LivenessView:
        """Analyse the frames (in capture order), then apply them to the session. Frames
        after the one that ends the session are not looked at."""
        if len(frames) > self.policy.max_frames_per_request:
            raise TooManyFramesError(
                f"{len(frames)} frames in one request; at most {self.policy.max_frames_per_request}"
            )
        async with session_scope(self.sessionmaker) as short:  # no connection held below
            await self._open_row(LivenessRepository(short, self.cipher), session_id)
        # all at once: the runners batch the frames' model calls; gather keeps their order
        observed = await asyncio.gather(*(observe_frame(self.pipeline, data) for data in frames))

        row = await self._open_row(self.repo, session_id)
        progress = LivenessProgress.from_json(row.progress)
        reference = self.repo.reference(row)
        replayed = await self.repo.used_digests(self.caller.tenant_id, [o.digest for o in observed])
        results: list[FrameResult] = []
        used: list[str] = []
        for frame in observed:
            if progress.status != "in_progress":
                break
            is_replay = frame.digest in replayed and frame.digest not in progress.digests
            if is_replay:
                frame = replace(frame, replayed=True)
            result, reference = self.checker.step(progress, frame, reference)
            results.append(result)
            if not is_replay and frame.digest not in used and frame.digest not in replayed:
                used.append(frame.digest)
        now = utcnow()
        ended = progress.status != "in_progress"
        saved = await self.repo.save_progress(
            row,
            progress=progress.as_json(),
            status=progress.status,
            reason=progress.reason,
            reference=reference,
            ended_at=now if ended else None,
        )
        if not saved:
            raise LivenessSessionBusyError("another request changed this session meanwhile")
        try:
            await self.repo.add_digests(self.caller.tenant_id, row.id, used)
        except IntegrityError as exc:  # the same frame sent to two sessions at once
            raise LivenessSessionBusyError("a frame was sent to another session meanwhile") from exc
        if ended:
            await AuditTrail(self.session, self.caller).record(
                "liveness", progress.status if progress.reason is None else progress.reason
            )
        await self.session.refresh(row)
        return _view(row, self.policy, now, results)

    async def use_for_login(self, session_id: uuid.UUID, probe: np.ndarray) -> None:
        """Spend a passed, unexpired, unused session on one login whose face must be the
        session's. It is spent (committed) before the faces are compared, so it cannot log in
        twice, whatever the outcome."""
        now = utcnow()
        async with session_scope(self.sessionmaker) as short:
            repo = LivenessRepository(short, self.cipher)
            row = await repo.get(self.caller.tenant_id, session_id)
            if row is None:
                raise LivenessSessionNotFoundError(f"no liveness session {session_id}")
            status, _ = _status(row, now)
            if row.used_at is not None:
                raise LivenessSessionUsedError("this liveness session has already logged in")
            if now >= row.expires_at:
                raise LivenessSessionExpiredError("this liveness session has expired")
            if status != "passed":
                raise LivenessNotPassedError(
                    f"this liveness session has not passed (status {status})", session_status=status
                )
            if not await repo.mark_used(row, now):
                raise LivenessSessionUsedError("this liveness session has already logged in")
            reference = repo.reference(row)
            model_name = row.model_name
        if (
            reference is None
            or model_name != self.pipeline.embedding_space
            or float(np.dot(reference, probe)) < self.checker.min_similarity
        ):
            raise LivenessFaceMismatchError(
                "the photo's face is not the face that passed the liveness session"
            )
