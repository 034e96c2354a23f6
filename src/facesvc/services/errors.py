"""Domain errors. Each has a stable slug; the API layer turns them into problem+json."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    slug = "service-error"
    status = 400
    title = "Request failed"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions


class NotFoundError(ServiceError):
    status = 404


class UserNotFoundError(NotFoundError):
    slug = "user-not-found"
    title = "User not found"


class FaceNotFoundError(NotFoundError):
    slug = "face-not-found"
    title = "Face not found"


class ConflictError(ServiceError):
    slug = "conflict"
    status = 409
    title = "Conflict"


class DuplicateExternalIdError(ConflictError):
    slug = "duplicate-external-id"
    title = "external_id already in use"


class NoFaceError(ServiceError):
    slug = "no-face"
    status = 422
    title = "No face found"


class MultipleFacesError(ServiceError):
    slug = "multiple-faces"
    status = 422
    title = "More than one face of similar size"


class NoEnrolledFacesError(ServiceError):
    slug = "no-enrolled-faces"
    status = 409
    title = "The user has no enrolled faces"


class KeyNotFoundError(NotFoundError):
    slug = "key-not-found"
    title = "API key not found"


class ConsentRequiredError(ServiceError):
    slug = "consent-required"
    status = 422
    title = "Consent not recorded"


class LockedOutError(ServiceError):
    slug = "too-many-attempts"
    status = 429
    title = "Too many failed verifications"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class FaceQualityError(ServiceError):
    """The face is usable for matching but not good enough to enrol (slug per reason)."""

    status = 422
    title = "Face quality too low to enrol"

    def __init__(self, slug: str, detail: str, **extensions: object) -> None:
        super().__init__(detail, **extensions)
        self.slug = slug


class NotCalibratedError(ServiceError):
    slug = "not-calibrated"
    status = 422
    title = "No score calibration for this model"


class JobNotFoundError(NotFoundError):
    slug = "job-not-found"
    title = "Job not found"


class JobFinishedError(ConflictError):
    slug = "job-finished"
    title = "Job already finished"


class AttributesUnavailableError(ServiceError):
    slug = "attributes-unavailable"
    status = 501
    title = "Attribute models not loaded"


class LivenessSessionNotFoundError(NotFoundError):
    slug = "liveness-session-not-found"
    title = "Liveness session not found"


class LivenessSessionExpiredError(ServiceError):
    slug = "liveness-session-expired"
    status = 410
    title = "Liveness session expired"


class LivenessSessionUsedError(ConflictError):
    slug = "liveness-session-used"
    title = "Liveness session already used"


class LivenessNotPassedError(ConflictError):
    slug = "liveness-not-passed"
    title = "Liveness session has not passed"


class LivenessSessionEndedError(ConflictError):
    slug = "liveness-session-ended"
    title = "Liveness session has ended"


class LivenessSessionBusyError(ConflictError):
    slug = "liveness-session-busy"
    title = "Liveness session changed by another request"


class LivenessFaceMismatchError(ServiceError):
    slug = "liveness-face-mismatch"
    status = 422
    title = "The photo's face is not the liveness session's face"


class LivenessRequiredError(ServiceError):
    slug = "liveness-required"
    status = 422
    title = "A passed liveness session is required"


class TooManyFramesError(ServiceError):
    slug = "too-many-frames"
    status = 413
    title = "Too many frames in one request"
