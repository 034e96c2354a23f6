"""Request and response models (the OpenAPI schema and generated clients come from these)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from facesvc.api.problems import Problem, problem_of
from facesvc.db import models as db
from facesvc.errors import ImageError, ServiceError
from facesvc.inference.attributes.models import FaceAttributes as EstimatedAttributes
from facesvc.inference.types import FIVE_POINT_NAMES, AnalysedFace, Box
from facesvc.services.analysis import AnalysedImage
from facesvc.services.liveness.checker import REASON_TEXT
from facesvc.services.liveness.service import LivenessView

Point = tuple[float, float]
Point3 = tuple[float, float, float]
MAX_METADATA_BYTES = 4096


class ImageSize(BaseModel):
    width: int = Field(examples=[640])
    height: int = Field(examples=[480])


class BoxOut(BaseModel):
    """Face box in original image pixels (x, y is the top-left corner)."""

    x: float = Field(examples=[212.4])
    y: float = Field(examples=[96.0])
    width: float = Field(examples=[141.7])
    height: float = Field(examples=[141.7])

    @classmethod
    def of(cls, box: Box) -> BoxOut:
        return cls(
            x=round(box.x, 2),
            y=round(box.y, 2),
            width=round(box.width, 2),
            height=round(box.height, 2),
        )

    @classmethod
    def of_stored(cls, face: db.Face) -> BoxOut:
        """The box stored with an enrolled face, as stored."""
        return cls(x=face.box_x, y=face.box_y, width=face.box_width, height=face.box_height)


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


class ModelRef(BaseModel):
    name: str = Field(examples=["facenet"])
    version: str = Field(examples=["20170512-110547-keras-frozen-1"])


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


def storable_text(value: str | None) -> str | None:
    """``_storable`` for optional text (None passes)."""
    return None if value is None else _storable(value)


def _storable(value: str) -> str:
    """Text every database can store: no control characters (NUL breaks PostgreSQL) and no
    lone surrogates (not valid UTF-8)."""
    for char in value:
        code = ord(char)
        if code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"contains an unsupported character U+{code:04X}")
    return value


def _storable_json(value: Any) -> None:
    if isinstance(value, str):
        _storable(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(str(key))
            _storable_json(item)
    elif isinstance(value, list):
        for item in value:
            _storable_json(item)


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_storable),
]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(examples=["Ada Lovelace"])
    external_id: Name | None = Field(
        default=None, description="Your own unique id for this person", examples=["emp-0042"]
    )
    metadata: dict[str, Any] | None = Field(
        default=None,
        description=f"Free JSON object, at most {MAX_METADATA_BYTES} bytes",
        examples=[{"department": "R&D"}],
    )

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        _storable_json(value)
        if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON")
        return value


class UserOut(BaseModel):
    id: uuid.UUID = Field(examples=["6c7f2e0a-5b1d-4f8e-9a3c-2d4b6e8f0a1c"])
    name: str = Field(examples=["Ada Lovelace"])
    external_id: str | None = Field(default=None, examples=["emp-0042"])
    metadata: dict[str, Any] | None = Field(default=None, examples=[{"department": "R&D"}])
    face_count: int = Field(default=0, description="Faces enrolled", examples=[2])
    created_at: datetime

    @classmethod
    def of(cls, user: db.User, face_count: int) -> UserOut:
        return cls(
            id=user.id,
            name=user.name,
            external_id=user.external_id,
            metadata=user.metadata_,
            face_count=face_count,
            created_at=user.created_at,
        )


class UserPage(BaseModel):
    items: list[UserOut]
    total: int = Field(description="Users in all pages", examples=[1])
    limit: int = Field(examples=[50])
    offset: int = Field(examples=[0])


class FaceOut(BaseModel):
    face_id: uuid.UUID = Field(examples=["0b9d1f3e-7a2c-4e6b-8d0f-1a3c5e7b9d2f"])
    user_id: uuid.UUID = Field(examples=["6c7f2e0a-5b1d-4f8e-9a3c-2d4b6e8f0a1c"])
    box: BoxOut = Field(description="The enrolled face in the uploaded photo")
    image: ImageSize
    detection_score: float = Field(examples=[0.9731])
    model: ModelRef
    quality: float | None = Field(
        default=None, description="Enrolment quality 0..1 (null: enrolled before it existed)"
    )
    consented_at: datetime | None = Field(
        default=None, description="When the person's consent was recorded"
    )
    created_at: datetime

    @classmethod
    def of(cls, face: db.Face) -> FaceOut:
        return cls(
            face_id=face.id,
            user_id=face.user_id,
            box=BoxOut.of_stored(face),
            image=ImageSize(width=face.image_width, height=face.image_height),
            detection_score=face.detection_score,
            model=ModelRef(name=face.model_name, version=face.model_version),
            quality=face.quality,
            consented_at=face.consented_at,
            created_at=face.created_at,
        )


class FaceList(BaseModel):
    items: list[FaceOut]


class MatchScore(BaseModel):
    match: bool = Field(description="similarity >= threshold", examples=[True])
    similarity: float = Field(
        description="Cosine similarity of the embeddings, -1..1", examples=[0.795]
    )
    distance: float = Field(
        description="Euclidean distance of the normalised embeddings, 0..2", examples=[0.64]
    )
    threshold: float = Field(description="Similarity at or above which faces match", examples=[0.4])


class VerifyResponse(BaseModel):
    """A failed verification looks the same whether the user does not exist, has no faces
    or is someone else: `match` false and, by default, no score (see
    FACESVC_VERIFY_REVEAL_FAILED_SCORES)."""

    match: bool = Field(description="similarity >= threshold", examples=[True])
    similarity: float | None = Field(
        description="Cosine similarity of the embeddings, -1..1 (null on a failed "
        "verification unless scores are revealed)",
        examples=[0.795],
    )
    distance: float | None = Field(
        description="Euclidean distance of the normalised embeddings, 0..2", examples=[0.64]
    )
    threshold: float = Field(description="Similarity at or above which faces match", examples=[0.4])
    probability: float | None = Field(
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


class Candidate(BaseModel):
    user_id: uuid.UUID = Field(examples=["6c7f2e0a-5b1d-4f8e-9a3c-2d4b6e8f0a1c"])
    name: str = Field(examples=["Ada Lovelace"])
    similarity: float = Field(
        description="Best cosine similarity over the user's faces", examples=[0.795]
    )
    probability: float | None = Field(
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


class CompareResponse(MatchScore):
    probability: float | None = Field(
        default=None, description="Calibrated probability of the same person", examples=[0.99]
    )
    false_match_rate: float | None = Field(
        default=None, description="Expected false-accept rate at this threshold", examples=[0.008]
    )
    box_a: BoxOut
    box_b: BoxOut


class ProblemType(BaseModel):
    """What a problem ``type`` means (GET /problems/{slug})."""

    type: str = Field(examples=["/problems/no-face"])
    title: str = Field(examples=["No face found"])
    description: str = Field(
        examples=["The detector found no face in the image. Send a sharper, better lit photo."]
    )


class ModelStatus(BaseModel):
    name: str
    task: str
    architecture: str
    version: str
    device: str = Field(
        description="Where the model runs: this worker's FACESVC_DEVICE for TensorFlow models, "
        "/CPU:0 for TFLite, OpenVINO and ONNX Runtime ones (CPU only)",
        examples=["/CPU:0"],
    )
    runtime: Literal["tensorflow", "tflite", "openvino", "onnxruntime"] = Field(
        description="What runs it (FACESVC_CPU_RUNTIME picks among a model's variants)",
        examples=["tflite"],
    )
    ready: bool
    load_seconds: float
    warmup_seconds: float
    placed_on: str | None = Field(
        default=None,
        description="TensorFlow models: the device their last call's output was placed on",
        examples=["/job:localhost/replica:0/task:0/device:GPU:1"],
    )


class WorkerStatus(BaseModel):
    """The worker process that answered, and how it shares the machine."""

    pid: int = Field(examples=[4321])
    index: int = Field(description="0 .. workers-1", examples=[0])
    workers: int = Field(description="Worker processes of this server", examples=[2])
    threads_per_model: int = Field(
        description="Threads each model runs in this worker", examples=[1]
    )
    cores: int = Field(description="CPU cores the process may use", examples=[2])


class ReadyResponse(BaseModel):
    status: str = Field(examples=["ready"])
    database: str = Field(examples=["ok"])
    models: list[ModelStatus]
    worker: WorkerStatus | None = None
    faces_needing_reembed: int = Field(
        default=0,
        description="Stored faces embedded by another model (a model change): not matched "
        "until `facesvc reembed` recomputes them",
        examples=[0],
    )
    gallery_backend: str = Field(
        default="exact",
        description="Where 1:N searches run (FACESVC_GALLERY_BACKEND): in this process "
        "(exact, ivf, hnsw) or in PostgreSQL (pgvector)",
        examples=["pgvector"],
    )
    gallery_faces: int | None = Field(
        default=None,
        description="Faces this worker holds for 1:N (null: the database holds them)",
        examples=[1000],
    )


class LiveResponse(BaseModel):
    status: str = Field(examples=["ok"])
    version: str


class LegacyRegisterResponse(BaseModel):
    user_id: uuid.UUID
    name: str
    face_id: uuid.UUID
    box: BoxOut

    @classmethod
    def of(cls, user: db.User, face: db.Face) -> LegacyRegisterResponse:
        return cls(user_id=user.id, name=user.name, face_id=face.id, box=BoxOut.of_stored(face))


class LegacyLoginResponse(BaseModel):
    match: bool
    user_id: uuid.UUID | None
    name: str | None
    similarity: float | None
    threshold: float


class BulkEnrolItem(BaseModel):
    """One photo's outcome: ``face`` when it was enrolled, else ``problem``."""

    index: int = Field(description="Position of the photo in the request")
    face: FaceOut | None = None
    problem: Problem | None = None


class BulkEnrolResponse(BaseModel):
    enrolled: int
    failed: int
    items: list[BulkEnrolItem]


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["kiosk-lobby"])
    scopes: list[Literal["admin", "enrol", "verify"]] = Field(
        min_length=1,
        max_length=3,
        description="admin: everything incl. keys and audit; enrol: users and faces; "
        "verify: verify, identify, compare",
        examples=[["verify"]],
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _storable(value)


class KeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it")
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None = None

    @classmethod
    def of(cls, key: db.ApiKey) -> KeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            scopes=sorted(key.scope_set),
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyCreated(KeyOut):
    key: str = Field(
        description="The secret key. Shown only in this response: store it now",
        examples=["fsk_3q2v..."],
    )


class KeyList(BaseModel):
    items: list[KeyOut]


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read straight off the audit row

    id: uuid.UUID
    created_at: datetime
    action: str = Field(examples=["verify"])
    result: str = Field(examples=["no-match"])
    actor: str = Field(description="The name of the key that acted", examples=["kiosk-lobby"])
    key_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    similarity: float | None = None
    request_id: str | None = None


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    total: int
    limit: int
    offset: int


JobKind = Literal["detect", "enrol"]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobItemOut(BaseModel):
    """One photo's outcome: ``detection`` (detect jobs) or ``face`` (enrol jobs) when it
    succeeded, else ``problem``."""

    index: int = Field(description="Position of the photo in the request", examples=[0])
    state: Literal["pending", "succeeded", "failed", "cancelled"] = Field(
        description="cancelled: never processed (the job was cancelled or failed first)",
        examples=["succeeded"],
    )
    detection: DetectResponse | None = Field(
        default=None, description="Detect jobs: the faces found, as POST /v1/detect answers"
    )
    face: FaceOut | None = Field(default=None, description="Enrol jobs: the enrolled face")
    problem: Problem | None = Field(default=None, description="Why this photo failed")

    @classmethod
    def of(cls, kind: str, item: db.JobItem) -> JobItemOut:
        """A photo's outcome, read back from the JSON that ``JobResultsJSON`` stored."""
        out = cls(index=item.position, state=item.state)
        if item.state == "failed" and item.result is not None:
            out.problem = Problem.model_validate(item.result)
        elif item.state == "succeeded" and item.result is not None:
            if kind == "detect":
                out.detection = DetectResponse.model_validate(item.result)
            else:
                out.face = FaceOut.model_validate(item.result)
        return out


class JobResultsJSON:
    """How the job runner stores a photo's outcome: as the JSON this API answers (read back
    by ``JobItemOut.of``)."""

    def detected(self, image: AnalysedImage) -> dict[str, Any]:
        return DetectResponse.of(image).model_dump(mode="json")

    def enrolled(self, face: db.Face) -> dict[str, Any]:
        return FaceOut.of(face).model_dump(mode="json")

    def failed(self, error: ServiceError | ImageError) -> dict[str, Any]:
        return problem_of(error).model_dump(mode="json", exclude_none=True)


class JobOut(BaseModel):
    """A job's state and progress, and once it has finished, every photo's outcome."""

    id: uuid.UUID = Field(examples=["3f0c9a5e-2b7d-4c1a-8e6f-9d2b4a6c8e0f"])
    kind: JobKind = Field(description="detect or enrol", examples=["detect"])
    state: JobState = Field(
        description="queued, running, then succeeded (every photo processed; each may still "
        "have failed on its own), failed (the job stopped: see `error`) or cancelled",
        examples=["running"],
    )
    total: int = Field(description="Photos in the job", examples=[120])
    done: int = Field(description="Photos processed so far, failed ones included", examples=[48])
    failed: int = Field(description="Processed photos that failed", examples=[2])
    percent: float = Field(description="done / total, in percent", examples=[40.0])
    user_id: uuid.UUID | None = Field(
        default=None,
        description="Enrol jobs: the user the faces are added to",
        examples=["6c7f2e0a-5b1d-4f8e-9a3c-2d4b6e8f0a1c"],
    )
    error: str | None = Field(default=None, description="Why a failed job stopped")
    created_at: datetime
    started_at: datetime | None = Field(
        default=None, description="When a worker first took the job"
    )
    finished_at: datetime | None = None
    items: list[JobItemOut] | None = Field(
        default=None,
        description="Every photo's outcome in request order, once the job has finished "
        "(null before, and in listings)",
    )

    @classmethod
    def of(cls, job: db.Job, items: list[db.JobItem] | None = None) -> JobOut:
        return cls(
            id=job.id,
            kind=job.kind,
            state=job.state,
            total=job.total,
            done=job.done,
            failed=job.failed,
            percent=round(100.0 * job.done / job.total, 1) if job.total else 100.0,
            user_id=job.user_id,
            error=job.error,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            items=None if items is None else [JobItemOut.of(job.kind, item) for item in items],
        )


class JobPage(BaseModel):
    items: list[JobOut] = Field(description="Newest first, without per-photo outcomes")
    total: int = Field(description="Jobs in all pages", examples=[1])
    limit: int = Field(examples=[20])
    offset: int = Field(examples=[0])


LivenessChallenge = Literal["turn_left", "turn_right", "blink", "open_mouth"]
LivenessStatus = Literal["in_progress", "passed", "failed", "expired"]


class LivenessFrameOut(BaseModel):
    """What one frame showed (for prompting the user: "turn further", "one face only")."""

    faces: int = Field(description="Faces found in the frame", examples=[1])
    completed: LivenessChallenge | None = Field(
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
    similarity: float | None = Field(
        default=None,
        description="Cosine similarity to the session's first face (same person check)",
        examples=[0.81],
    )
    live_score: float | None = Field(
        default=None,
        description="Live probability from the operator's presentation-attack model "
        "(FACESVC_ANTISPOOF_MODEL); null when none is configured",
        examples=[None],
    )


class LivenessSessionOut(BaseModel):
    """A liveness session: its challenges, how far it got, and its outcome."""

    id: uuid.UUID = Field(examples=["9b2e4c6a-1d3f-4a5b-8c7d-0e1f2a3b4c5d"])
    status: LivenessStatus = Field(
        description="in_progress until every challenge is done (passed), a rule is broken "
        "(failed: see `reason`) or its time runs out (expired)",
        examples=["in_progress"],
    )
    reason: str | None = Field(
        default=None,
        description="Why it failed: wrong-order, multiple-faces, different-person, no-motion, "
        "replayed-frames, challenges-not-completed, presentation-attack, expired",
        examples=[None],
    )
    reason_text: str | None = Field(
        default=None, description="The reason in words", examples=[None]
    )
    challenges: list[LivenessChallenge] = Field(
        description="What to do, in this order (the person's own left and right)",
        examples=[["blink", "turn_left", "open_mouth"]],
    )
    completed: int = Field(description="Challenges done so far, in order", examples=[1])
    current: LivenessChallenge | None = Field(
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


class TenantSettingsOut(BaseModel):
    """Settings of the caller's tenant."""

    name: str = Field(examples=["default"])
    require_liveness: bool = Field(
        description="Verification needs a passed liveness session (`liveness_session`)"
    )
    liveness_required_everywhere: bool = Field(
        description="FACESVC_LIVENESS_REQUIRED is on: every tenant needs liveness, whatever "
        "`require_liveness` says"
    )
    sensitive_attributes: bool = Field(
        description="`POST /v1/detect` may estimate age, gender and expression (off by "
        "default: 403 `attributes-not-enabled`); pose is always available"
    )

    @classmethod
    def of(cls, tenant: db.Tenant, required_everywhere: bool) -> TenantSettingsOut:
        return cls(
            name=tenant.name,
            require_liveness=tenant.require_liveness,
            liveness_required_everywhere=required_everywhere,
            sensitive_attributes=tenant.sensitive_attributes,
        )


class TenantSettingsPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    require_liveness: bool | None = Field(
        default=None, description="Make verification need a passed liveness session"
    )
    sensitive_attributes: bool | None = Field(
        default=None,
        description="Let `POST /v1/detect` estimate age, gender and expression. Emotion "
        "recognition is prohibited at work and in education (EU AI Act Art. 5(1)(f)); "
        "emotion recognition and biometric categorisation are high-risk elsewhere "
        "(Annex III) and the people analysed must be told (Art. 50(3))",
    )
