"""Detection, landmarks and embeddings of every face in an image."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Query, Response
from fastapi.exceptions import RequestValidationError

from facesvc.api.deps import AnalysisDep, CallerDep, ImageBytes, StateDep, current_caller
from facesvc.api.problems import problem_responses
from facesvc.api.schemas import DetectResponse, EmbedResponse, LandmarksResponse, ModelRef
from facesvc.inference.attributes import ATTRIBUTES, Attribute
from facesvc.services.analysis import require_attributes_allowed
from facesvc.services.annotation import AnnotatedImage, FaceAnnotationService

router = APIRouter(
    prefix="/v1",
    tags=["analysis"],
    dependencies=[Depends(current_caller)],
    responses=problem_responses(401, 403),
)
IMAGE_ERRORS = problem_responses(400, 413, 415, 422, 503)

ANNOTATE_DESCRIPTION = (
    "Return the image as PNG, with every face's box, score and five landmarks drawn, "
    "instead of JSON"
)
PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The faces as JSON, or the annotated image as PNG with annotate=true "
        "(header X-Face-Count: faces found)",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    }
}


async def get_annotation(analysis: AnalysisDep) -> FaceAnnotationService:
    return FaceAnnotationService(analysis)


AnnotationDep = Annotated[FaceAnnotationService, Depends(get_annotation)]
Annotate = Annotated[bool, Query(description=ANNOTATE_DESCRIPTION)]


ATTRIBUTES_DESCRIPTION = (
    "Comma-separated attributes to estimate for every face: "
    + ", ".join(ATTRIBUTES)
    + ", or all. Each costs time only when asked for (age, gender and pose read the face "
    "mesh; age and gender are dlib's networks, expression fer's, pose the mesh's angles). "
    "Age, gender and expression need your tenant's `sensitive_attributes` (PATCH /v1/tenant); "
    "without it they answer 403. Ignored with annotate=true"
)
ATTRIBUTES_FORBIDDEN = (
    "Problem `/problems/attributes-not-enabled`: age, gender or expression asked for while "
    'your tenant\'s `sensitive_attributes` is off (PATCH /v1/tenant {"sensitive_attributes": '
    "true} turns it on)"
)


def parse_attributes(value: str | None) -> frozenset[Attribute]:
    """``age,gender`` -> {"age", "gender"}; ``all`` -> every attribute; None -> none."""
    if value is None:
        return frozenset()
    names = [part.strip().lower() for part in value.split(",")]
    unknown = [name for name in names if name not in (*ATTRIBUTES, "all")]
    if unknown:
        raise ValueError(
            f"unknown attribute {', '.join(repr(n) for n in unknown)}: use "
            f"{', '.join(ATTRIBUTES)} or all, comma-separated"
        )
    if "all" in names:
        return frozenset(ATTRIBUTES)
    return frozenset(cast(Attribute, name) for name in names)


async def wanted_attributes(
    caller: CallerDep,
    state: StateDep,
    attributes: Annotated[
        str | None, Query(description=ATTRIBUTES_DESCRIPTION, examples=["age,gender"])
    ] = None,
) -> frozenset[Attribute]:
    """The attributes asked for, once the caller's tenant is known to allow them: a refusal
    comes before the upload is read or any image work."""
    try:
        wanted = parse_attributes(attributes)
    except ValueError as exc:
        raise RequestValidationError(
            [{"loc": ("query", "attributes"), "msg": str(exc), "type": "value_error"}]
        ) from exc
    await require_attributes_allowed(caller, wanted, state.sessionmaker)
    return wanted


AttributesDep = Annotated[frozenset[Attribute], Depends(wanted_attributes)]


def png_response(annotated: AnnotatedImage) -> Response:
    return Response(
        annotated.png, media_type="image/png", headers={"X-Face-Count": str(annotated.faces)}
    )


@router.post(
    "/detect",
    operation_id="detect_faces",
    summary="Find every face: box, score and five landmarks; age, gender, expression and "
    "head pose when asked",
    response_model=DetectResponse,
    responses={
        **IMAGE_ERRORS,
        **PNG_RESPONSE,
        **problem_responses(403, 501, described={403: ATTRIBUTES_FORBIDDEN}),
    },
)
async def detect_faces(
    attributes: AttributesDep,  # first: a refused request reads no image
    image: ImageBytes,
    analysis: AnalysisDep,
    annotation: AnnotationDep,
    annotate: Annotate = False,
) -> DetectResponse | Response:
    """Boxes and points are in the original image's pixels, largest face first; an image
    with no face answers 200 with an empty `faces` list. With `attributes`, each face also
    has the attributes asked for (figures and weak spots: docs/eval/attributes.json).

    Age, gender and expression are off by default (biometric categorisation and emotion
    recognition, which the EU AI Act restricts: Art. 5(1)(f) and (g), Annex III): asked for
    while your tenant's `sensitive_attributes` is off, they answer 403
    `/problems/attributes-not-enabled` (an admin turns them on with
    `PATCH /v1/tenant {"sensitive_attributes": true}`). Pose is always available."""
    if annotate:
        return png_response(await annotation.annotate(image))
    return DetectResponse.of(await analysis.analyse(image, attributes=attributes))


@router.post(
    "/landmarks",
    operation_id="face_landmarks",
    summary="Five landmarks per face, and the 468-point mesh with dense=true",
    response_model=LandmarksResponse,
    responses={**IMAGE_ERRORS, **PNG_RESPONSE},
)
async def face_landmarks(
    image: ImageBytes,
    analysis: AnalysisDep,
    annotation: AnnotationDep,
    dense: Annotated[
        bool, Query(description="Add the 468-point face mesh (drawn too with annotate=true)")
    ] = False,
    annotate: Annotate = False,
) -> LandmarksResponse | Response:
    """Mesh points are `[x, y, z]`: x and y in image pixels, z a relative depth (smaller is
    nearer the camera) on about the same scale as x."""
    if annotate:
        return png_response(await annotation.annotate(image, dense=dense))
    return LandmarksResponse.of(await analysis.analyse(image, dense=dense))


@router.post(
    "/embed",
    operation_id="embed_faces",
    summary="An L2-normalised embedding for every face (128-d with FaceNet)",
    responses=IMAGE_ERRORS,
)
async def embed(image: ImageBytes, analysis: AnalysisDep) -> EmbedResponse:
    result = await analysis.analyse(image, embed=True)
    pipeline = analysis.pipeline
    model = ModelRef(name=pipeline.embedding_space, version=pipeline.embedder_version)
    return EmbedResponse.of(result, model)
