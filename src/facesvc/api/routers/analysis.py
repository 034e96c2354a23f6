"""Detection, landmarks and embeddings of every face in an image."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from facesvc.api.deps import AnalysisDep, ImageBytes, current_caller
from facesvc.api.errors import problem_responses
from facesvc.api.schemas import (
    DetectedFace,
    DetectResponse,
    EmbeddedFace,
    EmbedResponse,
    ImageSize,
    LandmarkFace,
    LandmarksResponse,
    ModelRef,
)
from facesvc.services.analysis import FaceAnalysisService
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


def png_response(annotated: AnnotatedImage) -> Response:
    return Response(
        annotated.png, media_type="image/png", headers={"X-Face-Count": str(annotated.faces)}
    )


@router.post(
    "/detect",
    operation_id="detect_faces",
    summary="Find every face: box, score and five landmarks",
    response_model=DetectResponse,
    responses={**IMAGE_ERRORS, **PNG_RESPONSE},
)
async def detect_faces(
    image: ImageBytes,
    analysis: AnalysisDep,
    annotation: AnnotationDep,
    annotate: Annotate = False,
) -> DetectResponse | Response:
    """Boxes and points are in the original image's pixels, largest face first; an image
    with no face answers 200 with an empty `faces` list."""
    if annotate:
        return png_response(await annotation.annotate(image))
    return await detect(image, analysis)


async def detect(image: bytes, analysis: FaceAnalysisService) -> DetectResponse:
    """The JSON answer of /v1/detect (the legacy routes answer the same)."""
    result = await analysis.analyse(image)
    return DetectResponse(
        image=ImageSize(width=result.width, height=result.height),
        faces=[DetectedFace(**DetectedFace.fields_of(f)) for f in result.faces],
    )


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
    return await landmarks(image, analysis, dense=dense)


async def landmarks(
    image: bytes, analysis: FaceAnalysisService, dense: bool = False
) -> LandmarksResponse:
    """The JSON answer of /v1/landmarks (the legacy route answers the same)."""
    result = await analysis.analyse(image, dense=dense)
    faces = []
    for face in result.faces:
        mesh = None
        if face.mesh is not None:
            mesh = [
                (round(float(x), 2), round(float(y), 2), round(float(z), 2))
                for x, y, z in face.mesh
            ]
        faces.append(LandmarkFace(**DetectedFace.fields_of(face), mesh=mesh))
    return LandmarksResponse(image=ImageSize(width=result.width, height=result.height), faces=faces)


@router.post(
    "/embed",
    operation_id="embed_faces",
    summary="An L2-normalised embedding for every face (128-d with FaceNet)",
    responses=IMAGE_ERRORS,
)
async def embed(image: ImageBytes, analysis: AnalysisDep) -> EmbedResponse:
    result = await analysis.analyse(image, embed=True)
    pipeline = analysis.pipeline
    faces = [
        EmbeddedFace(
            **DetectedFace.fields_of(f),
            embedding=[float(v) for v in f.embedding] if f.embedding is not None else [],
            model=pipeline.embedding_space,
        )
        for f in result.faces
    ]
    return EmbedResponse(
        image=ImageSize(width=result.width, height=result.height),
        model=ModelRef(name=pipeline.embedding_space, version=pipeline.embedder_version),
        faces=faces,
    )
