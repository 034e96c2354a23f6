"""Liveness sessions and their frames."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from facesvc.api.schemas.common import Score
from facesvc.services.liveness.checker import REASON_TEXT, Challenge, FailureReason, Status
from facesvc.services.liveness.service import LivenessView


class LivenessFrameOut(BaseModel):
    """What one frame showed (for prompting the user: "turn further", "one face only")."""

    faces: int = Field(description="Faces found in the frame", examples=[1])
    completed: Challenge | None = Field(
        default=None, description="The challenge this frame completed, if any", examples=[None]
    )
    eye_openness: float | None = Field(
        default=None,
        description="Mean eye aspect ratio (about 0.25-0.35 open, near 0 closed)",
        examples=[0.29],
    )
    mouth_openness: float | None = Field(
        default=None,
        description="Inner-lip gap over mouth width (about 0 closed, over 0.3 wide open)",
        examples=[0.02],
    )
    yaw_deg: float | None = Field(
        default=None,
        description="Head turn in degrees; > 0: towards the person's own left (camera not "
        "mirrored)",
        examples=[4.1],
    )
    similarity: Score | None = Field(
        default=None,
        description="Cosine similarity to the session's first face (same person check)",
        examples=[0.81],
    )
    live_score: Score | None = Field(
        default=None,
        description="Live probability from the operator's presentation-attack model "
        "(FACESVC_ANTISPOOF_MODEL); null when none is configured",
        examples=[None],
    )


class LivenessSessionOut(BaseModel):
    """A liveness session: its challenges, how far it got, and its outcome."""

    id: uuid.UUID = Field(examples=["9b2e4c6a-1d3f-4a5b-8c7d-0e1f2a3b4c5d"])
    status: Status = Field(
        description="in_progress until every challenge is done (passed), a rule is broken "
        "(failed: see `reason`) or its time runs out (expired)",
        examples=["in_progress"],
    )
    reason: FailureReason | None = Field(default=None, description="Why it failed", examples=[None])
    reason_text: str | None = Field(
        default=None, description="The reason in words", examples=[None]
    )
    challenges: list[Challenge] = Field(
        description="What to do, in this order (the person's own left and right)",
        examples=[["blink", "turn_left", "open_mouth"]],
    )
    completed: int = Field(description="Challenges done so far, in order", examples=[1])
    current: Challenge | None = Field(
        default=None,
        description="The challenge to show the person now (null once the session ended)",
        examples=["turn_left"],
    )
    frames: int = Field(description="Frames used so far", examples=[7])
    max_frames: int = Field(description="Frames the session may use before it fails", examples=[60])
    used: bool = Field(description="A passed session that has logged in (once only)")
    created_at: datetime
    expires_at: datetime = Field(description="Frames and the login must come before this time")
    frame_results: list[LivenessFrameOut] | None = Field(
        default=None,
        description="POST .../frames: each frame's outcome, in the order sent (frames after "
        "the one that ended the session are not looked at)",
    )

    @classmethod
    def of(cls, view: LivenessView, *, with_frames: bool = False) -> LivenessSessionOut:
        return cls(
            id=view.id,
            status=view.status,
            reason=view.reason,
            reason_text=REASON_TEXT.get(view.reason) if view.reason else None,
            challenges=view.challenges,
            completed=view.done,
            current=view.current,
            frames=view.frames,
            max_frames=view.max_frames,
            used=view.used,
            created_at=view.created_at,
            expires_at=view.expires_at,
            frame_results=[
                LivenessFrameOut.model_validate(r, from_attributes=True) for r in view.frame_results
            ]
            if with_frames
            else None,
        )
