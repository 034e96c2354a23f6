"""The seed tutorial's routes, kept thin over the same services for people migrating.

Unlike the tutorial, images are only ever uploads (never a server path), users may have many
faces, and decisions use the calibrated threshold. Prefer the /v1 routes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form
from pydantic import AfterValidator

from facesvc.api.deps import (
    AnalysisDep,
    EnrolmentDep,
    LegacyImageBytes,
    ModelsReady,
    RecognitionDep,
    UserServiceDep,
    current_caller,
)
from facesvc.api.problems import problem_responses
from facesvc.api.schemas import (
    DetectResponse,
    LandmarksResponse,
    LegacyLoginResponse,
    LegacyRegisterResponse,
    storable_text,
)
from facesvc.errors import UploadsOnlyError

router = APIRouter(
    tags=["legacy"],
    deprecated=True,
    dependencies=[Depends(current_caller)],
    responses=problem_responses(401, 403),
)
ERRORS = problem_responses(400, 404, 409, 413, 415, 422, 503)
LegacyName = Annotated[
    str,
    Form(min_length=1, max_length=200, description="The user's name", examples=["Ada Lovelace"]),
    AfterValidator(storable_text),  # no NUL / lone surrogates (PostgreSQL cannot store them)
]


LEGACY_PATHS = ("/face_detect", "/face_landmark", "/face_register", "/face_login", "/upload")


async def uploads_only() -> None:
    """The tutorial's ``GET /face_detect?url=<server path>``: answered with what to do."""
    raise UploadsOnlyError(
        "facesvc never reads images from server paths: POST the photo as the multipart field "
        "`image` (or `file`)",
    )


# No API key needed to be told this: the tutorial's clients sent none.
gone_router = APIRouter(tags=["legacy"], deprecated=True)
for _path in LEGACY_PATHS:
    gone_router.add_api_route(
        _path,
        uploads_only,
        methods=["GET"],
        summary="Gone: images from server paths (`?url=`); POST an upload instead",
        status_code=410,
        response_model=None,
        include_in_schema=False,  # not an operation to call: /problems/uploads-only says why
    )


@router.post(
    "/face_detect",
    operation_id="legacy_face_detect",
    summary="Use POST /v1/detect",
    responses=ERRORS,
)
async def face_detect(image: LegacyImageBytes, analysis: AnalysisDep) -> DetectResponse:
    return DetectResponse.of(await analysis.analyse(image))


@router.post(
    "/upload",
    operation_id="legacy_upload",
    summary="Upload a photo and get its faces (uploads only, no server paths)",
    responses=ERRORS,
)
async def upload(image: LegacyImageBytes, analysis: AnalysisDep) -> DetectResponse:
    return DetectResponse.of(await analysis.analyse(image))


@router.post(
    "/face_landmark",
    operation_id="legacy_face_landmark",
    summary="Use POST /v1/landmarks?dense=true",
    responses=ERRORS,
)
async def face_landmark(image: LegacyImageBytes, analysis: AnalysisDep) -> LandmarksResponse:
    return LandmarksResponse.of(await analysis.analyse(image, dense=True))


@router.post(
    "/face_register",
    operation_id="legacy_face_register",
    summary="Enrol a face under a name (creates the user on first use)",
    responses=ERRORS,
    dependencies=[ModelsReady],
)
async def face_register(
    name: LegacyName,
    image: LegacyImageBytes,
    users: UserServiceDep,
    enrolment: EnrolmentDep,
    consent: Annotated[
        bool,
        Form(
            description="The person consented to storing this face; must be true",
            examples=[True],
        ),
    ],
) -> LegacyRegisterResponse:
    user = await users.by_name(name) or await users.create(name)
    face = await enrolment.enrol(user.id, image, consent=consent)
    return LegacyRegisterResponse.of(user, face)


@router.post(
    "/face_login",
    operation_id="legacy_face_login",
    summary="Log in by face: verify against `name`, or identify when no name is sent",
    responses=ERRORS,
)
async def face_login(
    image: LegacyImageBytes,
    recognition: RecognitionDep,
    name: Annotated[
        str | None,
        Form(
            max_length=200,
            description="Verify against this user; leave out to identify",
            examples=["Ada Lovelace"],
        ),
        AfterValidator(storable_text),
    ] = None,
) -> LegacyLoginResponse:
    if name:
        verified, found_name = await recognition.verify_by_name(name, image)
        return LegacyLoginResponse.of_verification(verified, found_name)
    # a login: an unknown face passes as anyone at most at the verification rate
    found = await recognition.identify(image, top_k=1, far=recognition.login_far)
    return LegacyLoginResponse.of_identification(found)
