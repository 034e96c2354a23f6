"""Verification (1:1), identification (1:N) and comparison.

Each response is read field by field off the service's result, whose fields have the same
names (boxes and candidates included); the field types round the scores and boxes."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field

from facesvc.api.schemas.common import BoxOut, Score
from facesvc.services.recognition.service import Comparison, Identification, Verification


class MatchScore(BaseModel):
    match: bool = Field(description="similarity >= threshold", examples=[True])
    similarity: Score = Field(
        description="Cosine similarity of the embeddings, -1..1", examples=[0.795]
    )
    distance: Score = Field(
        description="Euclidean distance of the normalised embeddings, 0..2", examples=[0.64]
    )
    threshold: float = Field(description="Similarity at or above which faces match", examples=[0.4])


class VerifyResponse(BaseModel):
    """A failed verification looks the same whether the user does not exist, has no faces
    or is someone else: `match` false and, by default, no score (see
    FACESVC_VERIFY_REVEAL_FAILED_SCORES)."""

    match: bool = Field(description="similarity >= threshold", examples=[True])
    similarity: Score | None = Field(
        description="Cosine similarity of the embeddings, -1..1 (null on a failed "
        "verification unless scores are revealed)",
        examples=[0.795],
    )
    distance: Score | None = Field(
        description="Euclidean distance of the normalised embeddings, 0..2", examples=[0.64]
    )
    threshold: float = Field(description="Similarity at or above which faces match", examples=[0.4])
    probability: Score | None = Field(
        default=None,
        description="Calibrated probability that it is the same person (logistic fit on LFW "
        "scores, equal priors); null when not revealed or the model has no calibration",
        examples=[0.9981],
    )
    false_match_rate: float | None = Field(
        default=None,
        description="Expected rate at which another person passes at this threshold (from "
        "the calibration)",
        examples=[0.0082],
    )
    user_id: uuid.UUID = Field(examples=["6c7f2e0a-5b1d-4f8e-9a3c-2d4b6e8f0a1c"])
    face_id: uuid.UUID | None = Field(
        description="The enrolled face that matched best",
        examples=["0b9d1f3e-7a2c-4e6b-8d0f-1a3c5e7b9d2f"],
    )
    faces_compared: int | None = Field(description="The user's enrolled faces", examples=[2])
    box: BoxOut = Field(description="The face used from the query photo (the largest)")

    @classmethod
    def of(cls, result: Verification) -> VerifyResponse:
        return cls.model_validate(result, from_attributes=True)


class Candidate(BaseModel):
    user_id: uuid.UUID = Field(examples=["6c7f2e0a-5b1d-4f8e-9a3c-2d4b6e8f0a1c"])
    name: str = Field(examples=["Ada Lovelace"])
    similarity: Score = Field(
        description="Best cosine similarity over the user's faces", examples=[0.795]
    )
    probability: Score | None = Field(
        default=None, description="Calibrated probability of the same person", examples=[0.99]
    )
    false_match_rate: float | None = Field(
        default=None,
        description="Expected chance that an unknown person scores at least this similarity "
        "against a gallery of this size (from the calibration): what accepting this candidate "
        "would risk",
        examples=[0.0004],
    )


class IdentifyResponse(BaseModel):
    match: uuid.UUID | None = Field(
        description="The best candidate's user_id if it clears the threshold, else null "
        "(an unknown person)",
        examples=["6c7f2e0a-5b1d-4f8e-9a3c-2d4b6e8f0a1c"],
    )
    threshold: float = Field(
        description="The 1:N threshold used: grows with the gallery so that an unknown person "
        "is matched at most at the target rate (FACESVC_IDENTIFY_FAR or `far`)",
        examples=[0.61],
    )
    gallery_faces: int = Field(description="Faces searched (your tenant's)", examples=[100])
    false_match_rate: float | None = Field(
        default=None,
        description="Expected chance that an unknown person is matched at this threshold and "
        "gallery size (from the calibration)",
        examples=[0.01],
    )
    candidates: list[Candidate] = Field(description="One entry per user, best first")
    box: BoxOut
    mode: Literal["decide", "review"] = Field(
        default="decide",
        description="`decide`: `match` is the automatic decision; `review`: candidates ranked "
        "for a person to review, no automatic decision (`match` is always null)",
    )

    @classmethod
    def of(cls, result: Identification) -> IdentifyResponse:
        return cls.model_validate(result, from_attributes=True)


class CompareResponse(MatchScore):
    probability: Score | None = Field(
        default=None, description="Calibrated probability of the same person", examples=[0.99]
    )
    false_match_rate: float | None = Field(
        default=None, description="Expected false-accept rate at this threshold", examples=[0.008]
    )
    box_a: BoxOut
    box_b: BoxOut

    @classmethod
    def of(cls, result: Comparison) -> CompareResponse:
        return cls.model_validate(result, from_attributes=True)
