"""Verification (1:1), identification (1:N with "unknown") and comparison of two photos.

Scores are cosine similarities of L2-normalised embeddings; ``distance`` is the Euclidean
distance of the same vectors (sqrt(2 - 2 * similarity)), the seed tutorial's measure.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.inference.types import Box
from facesvc.repositories.faces import FaceRepository
from facesvc.repositories.users import UserRepository
from facesvc.services.analysis import FaceAnalysisService
from facesvc.services.errors import NoEnrolledFacesError, UserNotFoundError
from facesvc.services.gallery import GallerySync


def distance_from_similarity(similarity: float) -> float:
    return math.sqrt(max(0.0, 2.0 - 2.0 * similarity))


@dataclass(frozen=True)
class Verification:
    user_id: uuid.UUID
    match: bool
    similarity: float
    threshold: float
    face_id: uuid.UUID
    faces_compared: int
    box: Box

    @property
    def distance(self) -> float:
        return distance_from_similarity(self.similarity)


@dataclass(frozen=True)
class Candidate:
    user_id: uuid.UUID
    name: str
    similarity: float
    face_id: uuid.UUID


@dataclass(frozen=True)
class Identification:
    match: uuid.UUID | None
    threshold: float
    candidates: list[Candidate]
    box: Box


@dataclass(frozen=True)
class Comparison:
    match: bool
    similarity: float
    threshold: float
    box_a: Box
    box_b: Box

    @property
    def distance(self) -> float:
        return distance_from_similarity(self.similarity)


class RecognitionService:
    def __init__(
        self,
        session: AsyncSession,
        analysis: FaceAnalysisService,
        gallery: GallerySync,
        threshold: float,
    ) -> None:
        self.session = session
        self.gallery = gallery
        self.users = UserRepository(session)
        self.faces = FaceRepository(session)
        self.analysis = analysis
        self.threshold = threshold

    @property
    def model_name(self) -> str:
        return self.analysis.pipeline.embedding_space

    async def verify(self, user_id: uuid.UUID, data: bytes) -> Verification:
        if await self.users.get(user_id) is None:
            raise UserNotFoundError(f"no user with id {user_id}")
        face_ids, matrix = await self.faces.embeddings_for_user(user_id, self.model_name)
        if not face_ids:
            raise NoEnrolledFacesError(
                f"user {user_id} has no faces enrolled with model {self.model_name!r}"
            )
        probe = await self.analysis.primary_face(data)
        scores = matrix @ probe.embedding
        best = int(np.argmax(scores))
        similarity = float(scores[best])
        return Verification(
            user_id=user_id,
            match=similarity >= self.threshold,
            similarity=similarity,
            threshold=self.threshold,
            face_id=face_ids[best],
            faces_compared=len(face_ids),
            box=probe.face.box,
        )

    async def identify(self, data: bytes, top_k: int) -> Identification:
        probe = await self.analysis.primary_face(data)
        index = await self.gallery.ensure_current(self.session)
        hits = index.search(probe.embedding, top_k)
        names = await self.faces.names_for(hit.user_id for hit in hits)
        candidates = [
            Candidate(
                user_id=hit.user_id,
                name=names.get(hit.user_id, ""),
                similarity=hit.similarity,
                face_id=hit.face_id,
            )
            for hit in hits
            if hit.user_id in names  # deleted by a transaction the index has not seen yet
        ]
        match = (
            candidates[0].user_id
            if candidates and candidates[0].similarity >= self.threshold
            else None
        )
        return Identification(
            match=match, threshold=self.threshold, candidates=candidates, box=probe.face.box
        )

    async def compare(self, data_a: bytes, data_b: bytes) -> Comparison:
        a, b = await asyncio.gather(
            self.analysis.primary_face(data_a), self.analysis.primary_face(data_b)
        )
        similarity = float(a.embedding @ b.embedding)
        return Comparison(
            match=similarity >= self.threshold,
            similarity=similarity,
            threshold=self.threshold,
            box_a=a.face.box,
            box_b=b.face.box,
        )
