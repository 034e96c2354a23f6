"""Detection, landmarks and embeddings of every face in an image."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from facesvc.api.deps import AnalysisDep, ImageBytes, api_key_header
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

router = APIRouter(prefix="/v1", tags=["analysis"], dependencies=[Depends(api_key_header)])
IMAGE_ERRORS = problem_responses(400, 413, 415, 422, 503)


@router.post(
    "/detect",
    operation_id="detect_faces",
    summary="Find every face: box, score and five landmarks",
    responses=IMAGE_ERRORS,
)
async def detect(image: ImageBytes, analysis: AnalysisDep) -> DetectResponse:
    result = await analysis.analyse(image)
    return DetectResponse(
        image=ImageSize(width=result.width, height=result.height),
        faces=[DetectedFace(**DetectedFace.fields_of(f)) for f in result.faces],
    )


@router.post(
    "/landmarks",
    operation_id="face_landmarks",
    summary="Five landmarks per face, and the 468-point mesh with dense=true",
    responses=IMAGE_ERRORS,
)
async def landmarks(
    image: ImageBytes,
    analysis: AnalysisDep,
    dense: Annotated[bool, Query(description="Add the 468-point face mesh")] = False,
) -> LandmarksResponse:
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
    summary="A 128-d L2-normalised embedding for every face",
    responses=IMAGE_ERRORS,
)
async def embed(image: ImageBytes, analysis: AnalysisDep) -> EmbedResponse:
    result = await analysis.analyse(image, embed=True)
    pipeline = analysis.pipeline
    faces = [
        EmbeddedFace(
            **DetectedFace.fields_of(f),
            embedding=[float(v) for v in f.embedding] if f.embedding is not None else [],
            model=pipeline.embedder_name,
        )
        for f in result.faces
    ]
    return EmbedResponse(
        image=ImageSize(width=result.width, height=result.height),
        model=ModelRef(name=pipeline.embedder_name, version=pipeline.embedder_version),
        faces=faces,
    )
