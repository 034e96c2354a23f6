"""Verification (1:1), identification (1:N with "unknown") and comparison of two photos.

Scores are cosine similarities of L2-normalised embeddings; ``distance`` is the Euclidean
distance of the same vectors (sqrt(2 - 2 * similarity)), the seed tutorial's measure.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.db.group_writer import Writer
from facesvc.errors import LivenessRequiredError
from facesvc.gallery.backend import Gallery
from facesvc.inference.types import Box
from facesvc.repositories.attempts import LoginAttemptRepository
from facesvc.repositories.audit import AuditRepository
from facesvc.repositories.tenants import TenantRepository
from facesvc.repositories.users import UserRepository
from facesvc.security.keys import Caller
from facesvc.services.analysis import FaceAnalysisService
from facesvc.services.audit import AuditTrail
from facesvc.services.liveness.service import LivenessService
from facesvc.services.recognition.decisions import DecisionPolicy
from facesvc.services.recognition.lockout import LockoutGuard, LockoutPolicy
from facesvc.settings import Settings

if TYPE_CHECKING:
    from facesvc.inference.registry import ModelRegistry


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # seen: never reported as "exception was never retrieved"


async def _settle(model_work: asyncio.Future[Any], db_work: asyncio.Future[Any] | None) -> None:
    """Stop the model work if it still runs; let the database work end on its own, even when
    this request is cancelled (a client that went away): a query cancelled mid-flight leaves
    a broken pooled connection. ``asyncio.wait``, unlike ``gather``, never cancels what it
    waits for."""
    model_work.cancel()
    tasks = {model_work} if db_work is None else {model_work, db_work}
    for task in tasks:
        task.add_done_callback(_retrieve)
    await asyncio.wait(tasks)


def distance_from_similarity(similarity: float) -> float:
    return math.sqrt(max(0.0, 2.0 - 2.0 * similarity))


@dataclass(frozen=True)
class Verification:
    """The outcome of a 1:1 check. On a failed check the score, face and count are None
    unless scores are revealed: a score on failure lets an attacker hill-climb towards a
    user's template, and would tell an unknown user from a wrong face."""

    user_id: uuid.UUID
    match: bool
    similarity: float | None
    threshold: float
    face_id: uuid.UUID | None
    faces_compared: int | None
    box: Box
    probability: float | None = None
    false_match_rate: float | None = None

    @property
    def distance(self) -> float | None:
        return None if self.similarity is None else distance_from_similarity(self.similarity)


@dataclass(frozen=True)
class RankedCandidate:
    """One user an identification found, with their best face's score (the API's
    ``schemas.Candidate`` is what it answers)."""

    user_id: uuid.UUID
    name: str
    similarity: float
    face_id: uuid.UUID
    probability: float | None = None
    # chance that an unknown person scores this high against a gallery of this size
    false_match_rate: float | None = None


IdentifyMode = Literal["decide", "review"]


@dataclass(frozen=True)
class Identification:
    match: uuid.UUID | None
    threshold: float
    candidates: list[RankedCandidate]
    box: Box
    gallery_faces: int = 0
    false_match_rate: float | None = None
    mode: IdentifyMode = "decide"


@dataclass(frozen=True)
class Comparison:
    match: bool
    similarity: float
    threshold: float
    box_a: Box
    box_b: Box
    probability: float | None = None
    false_match_rate: float | None = None

    @property
    def distance(self) -> float:
        return distance_from_similarity(self.similarity)


@dataclass(frozen=True)
class RecognitionPolicy:
    """How recognition decides and what it tells: the thresholds, the lockout after failed
    verifications, and whether a failed verification shows its score."""

    decisions: DecisionPolicy
    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    reveal_failed_scores: bool = False
    identify_mode: IdentifyMode = "decide"

    @classmethod
    def from_settings(cls, settings: Settings, registry: ModelRegistry) -> RecognitionPolicy:
        """Needs the loaded embedder's threshold and calibration (DecisionPolicy)."""
        return cls(
            DecisionPolicy.from_settings(settings, registry),
            LockoutPolicy.from_settings(settings),
            reveal_failed_scores=settings.verify_reveal_failed_scores,
            identify_mode=settings.identify_mode,
        )


class RecognitionService:
    """1:1 and 1:N within the caller's tenant.

    ``session`` is the request's (its reads); ``sessionmaker`` gives the short sessions of
    reads that overlap inference, so no connection waits on a model; ``writer`` takes the
    small writes (attempt counts, a cleared lockout, audit rows), committed before the
    answer."""

    def __init__(
        self,
        session: AsyncSession,
        sessionmaker: async_sessionmaker[AsyncSession],
        analysis: FaceAnalysisService,
        gallery: Gallery,
        caller: Caller,
        policy: RecognitionPolicy,
        writer: Writer,
        liveness: LivenessService | None = None,
    ) -> None:
        self.session = session
        self.writer = writer
        self.sessionmaker = sessionmaker
        self.gallery = gallery
        self.caller = caller
        self.faces = gallery.faces(session)
        self.audit = AuditTrail(session, caller)
        self.analysis = analysis
        self.decisions = policy.decisions
        self.lockout = LockoutGuard(sessionmaker, writer, policy.lockout)
        self.reveal_failed_scores = policy.reveal_failed_scores
        self.default_identify_mode: IdentifyMode = policy.identify_mode
        self.liveness = liveness

    @property
    def login_far(self) -> float | None:
        """The false-match rate a login by face (the legacy ``/face_login``) is decided at:
        verification's, also when it identifies (None: no calibration to apply it with)."""
        decisions = self.decisions
        return decisions.verify_far if decisions.calibration is not None else None

    @property
    def model_name(self) -> str:
        return self.analysis.pipeline.embedding_space

    async def verify(
        self,
        user_id: uuid.UUID,
        data: bytes,
        far: float | None = None,
        liveness_session: uuid.UUID | None = None,
    ) -> Verification:
        """Unknown users, users without faces and wrong faces all fail the same way (same
        answer, same work: the probe is always embedded), and all count towards the lockout
        of the id that was tried. With ``liveness_session``, the session must have passed,
        be unused and show the probe's face (it is spent either way); a tenant that requires
        liveness refuses a verification without one (not counted as an attempt)."""
        tenant = self.caller.tenant_id
        # The photo is analysed while the attempt is counted and the user's faces are read,
        # in one short transaction of their own (no connection waits on the models). Nothing
        # is compared until the count is committed; a locked-out id stops the model work and
        # reads nothing, so its 429 says nothing about the user.
        analysed = asyncio.ensure_future(self.analysis.primary_face(data))
        enrolled = asyncio.ensure_future(
            self._count_then_read(user_id, liveness_given=liveness_session is not None)
        )
        try:
            known, face_ids, matrix = await asyncio.shield(enrolled)
            probe = await analysed
        finally:
            await _settle(analysed, enrolled)
        if liveness_session is not None:
            await self._use_liveness(liveness_session, probe.embedding)
        similarity: float | None = None
        face_id: uuid.UUID | None = None
        if face_ids:
            scores = matrix @ probe.embedding
            best = int(np.argmax(scores))
            similarity, face_id = float(scores[best]), face_ids[best]
        threshold = self.decisions.verification(far)
        match = similarity is not None and similarity >= threshold
        result = (
            "match"
            if match
            else "unknown-user"
            if not known
            else "no-enrolled-faces"
            if not face_ids
            else "no-match"
        )
        event = self.audit.event("verify", result, user_id=user_id, similarity=similarity)

        async def write(session: AsyncSession) -> None:
            if match:  # cleared with the audit row: one write
                await LoginAttemptRepository(session).clear(tenant, user_id)
            await AuditRepository(session).add(event)

        await self.writer.run(write)
        reveal = match or self.reveal_failed_scores
        return Verification(
            user_id=user_id,
            match=match,
            similarity=similarity if reveal else None,
            threshold=threshold,
            face_id=face_id if reveal else None,
            faces_compared=len(face_ids) if reveal else None,
            box=probe.face.box,
            probability=self.decisions.probability(similarity) if reveal else None,
            false_match_rate=self.decisions.false_match_rate(threshold),
        )

    async def _use_liveness(self, session_id: uuid.UUID, probe: np.ndarray) -> None:
        if self.liveness is None:
            raise RuntimeError("liveness sessions are not available to this service")
        await self.liveness.use_for_login(session_id, probe)

    async def _count_then_read(
        self, user_id: uuid.UUID, liveness_given: bool
    ) -> tuple[bool, list[uuid.UUID], npt.NDArray[np.float32]]:
        """Refuses (nothing counted) when the tenant requires liveness and none was given;
        counts the attempt, then reads whether the tenant has this user, and the user's face
        ids and embeddings."""
        if not liveness_given and await self._liveness_required():
            raise LivenessRequiredError(
                "this tenant requires a passed liveness session for verification: send "
                "its id as `liveness_session`"
            )

        tenant = self.caller.tenant_id
        async with self.lockout.attempt(tenant, user_id) as session:  # counted and committed
            faces = self.gallery.faces(session)
            return await faces.tenant_user_embeddings(tenant, user_id, self.model_name)

    async def _liveness_required(self) -> bool:
        if self.liveness is not None and self.liveness.policy.required:
            return True
        if self.caller.require_liveness is not None:  # read with the caller's key
            return self.caller.require_liveness
        async with session_scope(self.sessionmaker) as session:
            tenant = await TenantRepository(session).get(self.caller.tenant_id)
        return tenant is not None and tenant.require_liveness

    async def verify_by_name(
        self, name: str, data: bytes, far: float | None = None
    ) -> tuple[Verification, str | None]:
        """Verify against the earliest user with this name. An unknown name is tried as a
        stable id of its own, so it fails (and locks) exactly like a wrong face."""
        async with session_scope(self.sessionmaker) as session:  # not held during inference
            user = await UserRepository(session, self.caller.tenant_id).get_by_name(name)
            found = (user.id, user.name) if user else None
        subject = found[0] if found else uuid.uuid5(self.caller.tenant_id, f"name:{name}")
        return await self.verify(subject, data, far), (found[1] if found else None)

    async def identify(
        self,
        data: bytes,
        top_k: int,
        far: float | None = None,
        liveness_session: uuid.UUID | None = None,
        mode: IdentifyMode = "decide",
    ) -> Identification:
        """1:N. ``mode="review"`` ranks candidates for a person to review and decides nothing
        (``match`` stays None): for galleries where the calibrated threshold leaves few genuine
        probes above it (README: identification at scale)."""
        # A local gallery copy is brought up to date (a short session of its own) while the
        # photo is analysed.
        analysed = asyncio.ensure_future(self.analysis.primary_face(data))
        current = asyncio.ensure_future(self.gallery.refresh())
        try:
            probe = await analysed
            await asyncio.shield(current)
        finally:
            await _settle(analysed, current)
        if liveness_session is not None:
            await self._use_liveness(liveness_session, probe.embedding)
        found = await self.gallery.search(probe.embedding, top_k, self.caller.tenant_id)
        hits, gallery_faces = found.hits, found.tenant_faces
        threshold = self.decisions.one_to_many(gallery_faces, far)
        names = await self.faces.names_for(hit.user_id for hit in hits)
        candidates = [
            RankedCandidate(
                user_id=hit.user_id,
                name=names.get(hit.user_id, ""),
                similarity=hit.similarity,
                face_id=hit.face_id,
                probability=self.decisions.probability(hit.similarity),
                false_match_rate=self.decisions.false_match_rate(hit.similarity, gallery_faces),
            )
            for hit in hits
            if hit.user_id in names  # deleted by a transaction the index has not seen yet
        ]
        cleared = bool(candidates) and candidates[0].similarity >= threshold
        match = candidates[0].user_id if cleared and mode == "decide" else None
        event = self.audit.event(
            "identify",
            "review" if mode == "review" else ("match" if match else "unknown"),
            user_id=match,
            similarity=candidates[0].similarity if candidates else None,
        )

        async def write(session: AsyncSession) -> None:
            await AuditRepository(session).add(event)

        await self.writer.run(write)
        return Identification(
            match=match,
            threshold=threshold,
            candidates=candidates,
            box=probe.face.box,
            gallery_faces=gallery_faces,
            false_match_rate=self.decisions.false_match_rate(threshold, gallery_faces),
            mode=mode,
        )

    async def compare(self, data_a: bytes, data_b: bytes, far: float | None = None) -> Comparison:
        a, b = await asyncio.gather(
            self.analysis.primary_face(data_a), self.analysis.primary_face(data_b)
        )
        similarity = float(a.embedding @ b.embedding)
        threshold = self.decisions.one_to_one(far)
        return Comparison(
            match=similarity >= threshold,
            similarity=similarity,
            threshold=threshold,
            box_a=a.face.box,
            box_b=b.face.box,
            probability=self.decisions.probability(similarity),
            false_match_rate=self.decisions.false_match_rate(threshold),
        )
