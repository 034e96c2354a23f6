"""Liveness sessions: challenge-response checks that a live person is in front of the camera."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Path, UploadFile, status

from facesvc.api.deps import BINARY_FILES, LivenessDep, StateDep, read_upload, require_verify
from facesvc.api.problems import problem_responses
from facesvc.api.schemas import LivenessSessionOut

router = APIRouter(
    prefix="/v1/liveness",
    tags=["liveness"],
    dependencies=[Depends(require_verify)],
    responses=problem_responses(401, 403),
)
SessionId = Annotated[uuid.UUID, Path(description="The session's id")]


@router.post(
    "/sessions",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_liveness_session",
    summary="Start a liveness session: the challenges to show the person, in order",
    responses=problem_responses(503),
)
async def create_liveness_session(liveness: LivenessDep) -> LivenessSessionOut:
    """Draws 2-4 challenges (FACESVC_LIVENESS_CHALLENGE_COUNT, default 3) at random from
    `turn_left`, `turn_right`, `blink`, `open_mouth`, in random order. Show `current` to the
    person, send camera frames to `/frames` as they come, and once `status` is `passed`,
    log in with `POST /v1/users/{id}/verify?liveness_session=<id>` before `expires_at`.
    Left and right are the person's own (for an unmirrored camera image)."""
    return LivenessSessionOut.of(await liveness.create())


@router.post(
    "/sessions/{session_id}/frames",
    operation_id="add_liveness_frames",
    summary="Send camera frames, in capture order; answers the session's progress",
    responses=problem_responses(400, 404, 409, 413, 415, 422, 503),
)
async def add_liveness_frames(
    session_id: SessionId,
    state: StateDep,
    liveness: LivenessDep,
    frames: Annotated[
        list[UploadFile],
        File(
            description="1 to FACESVC_LIVENESS_MAX_FRAMES_PER_REQUEST (default 8) camera frames "
            "(JPEG, PNG or WebP), oldest first (field `frames`)",
            json_schema_extra=BINARY_FILES,
        ),
    ],
) -> LivenessSessionOut:
    """Each frame is checked in order: exactly one face, the same person as the first frame,
    and whether it completes the current challenge (which needs the face at rest in an
    earlier frame: eyes open, mouth closed, facing the camera). A later challenge done before
    the current one, the same frame twice, a still face, or a frame that an earlier session
    used fails the session. 409 `liveness-session-ended` once it has passed, failed or
    expired; nothing is changed by a request with an unreadable frame."""
    data = [await read_upload(upload, state) for upload in frames]
    view = await liveness.add_frames(session_id, data)
    return LivenessSessionOut.of(view, with_frames=True)


@router.get(
    "/sessions/{session_id}",
    operation_id="get_liveness_session",
    summary="A liveness session's status and progress",
    responses=problem_responses(404, 422, 503),
)
async def get_liveness_session(session_id: SessionId, liveness: LivenessDep) -> LivenessSessionOut:
    return LivenessSessionOut.of(await liveness.get(session_id))
