"""Detection, landmarks, attributes and embeddings of the faces in one photo."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from facesvc.api.schemas.common import BoxOut, ImageSize, ModelRef, Point, Point3
from facesvc.inference.attributes.models import FaceAttributes as EstimatedAttributes
from facesvc.inference.types import FIVE_POINT_NAMES, AnalysedFace
from facesvc.services.analysis import AnalysedImage


class FiveLandmarks(BaseModel):
    """Five points in image pixels; left/right as seen in the image."""

    left_eye: Point = Field(examples=[[248.1, 141.3]])
    right_eye: Point = Field(examples=[[311.6, 139.8]])
    nose: Point = Field(examples=[[281.0, 175.2]])
    mouth_left: Point = Field(examples=[[256.4, 205.9]])
    mouth_right: Point = Field(examples=[[305.7, 204.6]])


class FoundFace(BaseModel):
    """A face as the detector and landmark stage found it."""

    box: BoxOut
    score: float = Field(ge=0.0, le=1.0, description="Detector confidence", examples=[0.9731])
    landmarks: FiveLandmarks

    @classmethod
    def fields_of(cls, face: AnalysedFace) -> dict[str, Any]:
        points = {
            name: (round(float(x), 2), round(float(y), 2))
            for name, (x, y) in zip(FIVE_POINT_NAMES, face.points, strict=True)
        }
        return {
            "box": BoxOut.of(face.box),
            "score": round(face.detection.score, 4),
            "landmarks": FiveLandmarks(**points),
        }


class AgeOut(BaseModel):
    """Apparent age, coarse: 7.6 years off on average on LFW photos of public people,
    overestimated under 20 and underestimated over 60 (docs/eval/attributes.json)."""

    value: float = Field(
        ge=0.0,
        le=80.0,
        description="Years: the expectation of the network's distribution over 0-80",
        examples=[41.3],
    )
    low: float = Field(
        ge=0.0,
        le=80.0,
        description="10th percentile of that distribution, years (at most `value`). The "
        "network is over-confident: on LFW the labelled age lay between `low` and `high` only "
        "about a third of the time; a wide interval still marks an unsure estimate",
        examples=[37.0],
    )
    high: float = Field(
        ge=0.0,
        le=80.0,
        description="90th percentile of that distribution, years (at least `value`)",
        examples=[45.0],
    )


class GenderOut(BaseModel):
    """Apparent gender as the network was trained to call it (two classes)."""

    value: Literal["female", "male"] = Field(
        description="The more probable of the network's two classes", examples=["female"]
    )
    confidence: float = Field(
        ge=0.5, le=1.0, description="The network's probability of `value`", examples=[0.994]
    )


Expression = Literal["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


class ExpressionScores(BaseModel):
    """Probability of each expression (they sum to 1)."""

    angry: float = Field(ge=0.0, le=1.0, description="Probability of angry", examples=[0.01])
    disgust: float = Field(ge=0.0, le=1.0, description="Probability of disgust", examples=[0.0])
    fear: float = Field(ge=0.0, le=1.0, description="Probability of fear", examples=[0.02])
    happy: float = Field(ge=0.0, le=1.0, description="Probability of happy", examples=[0.91])
    sad: float = Field(ge=0.0, le=1.0, description="Probability of sad", examples=[0.01])
    surprise: float = Field(ge=0.0, le=1.0, description="Probability of surprise", examples=[0.01])
    neutral: float = Field(ge=0.0, le=1.0, description="Probability of neutral", examples=[0.04])


class ExpressionOut(BaseModel):
    """Facial expression, one of seven (FER2013's classes): coarse; reliable mostly for
    happy versus neutral."""

    value: Expression = Field(description="The most probable expression", examples=["happy"])
    confidence: float = Field(ge=0.0, le=1.0, description="Its probability", examples=[0.91])
    scores: ExpressionScores = Field(description="Every expression's probability")


class PoseOut(BaseModel):
    """Head pose in degrees from the 468-point face mesh (0, 0, 0: facing the camera)."""

    yaw: float = Field(
        description="Left-right turn: > 0 when the nose points towards the image's right "
        "(the person's own left, for a camera that does not mirror)",
        examples=[-12.4],
    )
    pitch: float = Field(description="Up-down: > 0 when looking down", examples=[4.1])
    roll: float = Field(
        description="Tilt in the image plane: > 0 when the eye line turns clockwise (the "
        "image-right eye lower)",
        examples=[-2.0],
    )


class FaceAttributes(BaseModel):
    """What `attributes` asked for; an attribute not asked for is null."""

    age: AgeOut | None = Field(default=None, description="With attributes=age")
    gender: GenderOut | None = Field(default=None, description="With attributes=gender")
    expression: ExpressionOut | None = Field(default=None, description="With attributes=expression")
    pose: PoseOut | None = Field(default=None, description="With attributes=pose")

    @classmethod
    def of(cls, found: EstimatedAttributes) -> FaceAttributes:
        age = gender = expression = pose = None
        if found.age is not None:
            a = found.age
            age = AgeOut(value=round(a.years, 1), low=round(a.low, 1), high=round(a.high, 1))
        if found.gender is not None:
            g = found.gender
            gender = GenderOut(value=g.label, confidence=round(g.confidence, 4))
        if found.expression is not None:
            e = found.expression
            expression = ExpressionOut(
                value=e.label,
                confidence=round(e.confidence, 4),
                scores=ExpressionScores(**{k: round(v, 4) for k, v in e.scores.items()}),
            )
        if found.pose is not None:
            p = found.pose
            pose = PoseOut(yaw=round(p.yaw, 1), pitch=round(p.pitch, 1), roll=round(p.roll, 1))
        return cls(age=age, gender=gender, expression=expression, pose=pose)


class DetectedFace(FoundFace):
    attributes: FaceAttributes | None = Field(
        default=None, description="The face's attributes when `attributes` was given, else null"
    )


class DetectResponse(BaseModel):
    image: ImageSize
    faces: list[DetectedFace] = Field(description="Every face found, largest first")

    @classmethod
    def of(cls, result: AnalysedImage) -> DetectResponse:
        """The answer of /v1/detect (and of the legacy routes and detect jobs)."""
        found = result.attributes
        return cls(
            image=ImageSize(width=result.width, height=result.height),
            faces=[
                DetectedFace(
                    **DetectedFace.fields_of(face),
                    attributes=FaceAttributes.of(found[index]) if found is not None else None,
                )
                for index, face in enumerate(result.faces)
            ],
        )


class LandmarkFace(FoundFace):
    mesh: list[Point3] | None = Field(
        default=None, description="468 (x, y, z) MediaPipe face-mesh points when dense=true"
    )


class LandmarksResponse(BaseModel):
    image: ImageSize
    faces: list[LandmarkFace]

    @classmethod
    def of(cls, result: AnalysedImage) -> LandmarksResponse:
        """The answer of /v1/landmarks (and of the legacy route)."""
        faces = []
        for face in result.faces:
            mesh = None
            if face.mesh is not None:
                mesh = [
                    (round(float(x), 2), round(float(y), 2), round(float(z), 2))
                    for x, y, z in face.mesh
                ]
            faces.append(LandmarkFace(**DetectedFace.fields_of(face), mesh=mesh))
        return cls(image=ImageSize(width=result.width, height=result.height), faces=faces)


class EmbeddedFace(FoundFace):
    embedding: list[float] = Field(
        description="L2-normalised embedding: as many floats as the embedder gives (FaceNet: 128)"
    )
    model: str = Field(examples=["facenet"])


class EmbedResponse(BaseModel):
    image: ImageSize
    model: ModelRef
    faces: list[EmbeddedFace]

    @classmethod
    def of(cls, result: AnalysedImage, model: ModelRef) -> EmbedResponse:
        """The answer of /v1/embed: ``result`` analysed with ``embed=True`` by ``model``."""
        return cls(
            image=ImageSize(width=result.width, height=result.height),
            model=model,
            faces=[
                EmbeddedFace(
                    **DetectedFace.fields_of(f),
                    embedding=[float(v) for v in f.embedding] if f.embedding is not None else [],
                    model=model.name,
                )
                for f in result.faces
            ],
        )
