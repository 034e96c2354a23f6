"""The error catalogue: every problem facesvc reports is one class here.

Each concrete class *is* its catalogue entry: ``slug`` (the last segment of the problem's
``type``, ``/problems/<slug>``), ``status``, ``title`` and ``description`` (what it means and
what to do, served at ``GET /problems/<slug>``). The API layer (``api/problems.py``) turns a
raised error into ``application/problem+json`` and builds the problem list from
:func:`catalogue`, so a slug cannot be raised without being documented, and there is no slug
string to mistype.

Classes without a ``slug`` (``ServiceError``, ``NotFoundError``, ``ImageError`` ...) are
families, caught by callers that handle a whole kind of problem; only their subclasses are
raised. ``ConfigurationError``, at the end, is no problem type: settings the service refuses to
start with. This module imports nothing from facesvc: every layer, inference included, may use
it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar


class FacesvcError(Exception):
    """A problem with a stable slug; ``extensions`` become extra members of the problem."""

    slug: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    status: int
    # Response headers every instance sends (Retry-After, WWW-Authenticate ...).
    default_headers: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "slug" not in cls.__dict__:
            return  # a family
        missing = [a for a in ("title", "description") if a not in cls.__dict__]
        if missing or not hasattr(cls, "status"):
            raise TypeError(f"{cls.__name__} needs its own {missing or 'status'}")
        for other in catalogue():
            if other is not cls and other.slug == cls.slug:
                raise TypeError(f"{cls.__name__} reuses {other.__name__}'s slug {cls.slug!r}")

    def __init__(
        self, detail: str, *, headers: Mapping[str, str] | None = None, **extensions: Any
    ) -> None:
        if not hasattr(self, "slug"):
            raise TypeError(f"{type(self).__name__} is a family of problems: raise a subclass")
        super().__init__(detail)
        self.detail = detail
        self.headers = {**self.default_headers, **(headers or {})} or None
        self.extensions = extensions


def catalogue() -> Iterator[type[FacesvcError]]:
    """Every problem type, found by walking the subclasses of :class:`FacesvcError`."""
    pending: list[type[FacesvcError]] = [FacesvcError]
    seen: set[type[FacesvcError]] = set()
    while pending:
        cls = pending.pop(0)
        if cls in seen:
            continue
        seen.add(cls)
        if "slug" in cls.__dict__:
            yield cls
        pending.extend(cls.__subclasses__())


def problem_type(slug: str) -> type[FacesvcError] | None:
    return next((cls for cls in catalogue() if cls.slug == slug), None)


# --- requests: raised by the API layer ------------------------------------------------------


class InvalidRequestError(FacesvcError):
    slug = "validation-error"
    status = 422
    title = "Invalid request"
    description = "A parameter or field is missing or malformed; `errors` lists each one."


class UnauthorizedError(FacesvcError):
    slug = "unauthorized"
    status = 401
    title = "Missing or invalid API key"
    description = (
        "Send a valid key in the X-API-Key header (or Authorization: Bearer <key>). Keys are "
        "created by an admin with POST /v1/keys or `facesvc keys create`."
    )
    default_headers: ClassVar[Mapping[str, str]] = {
        "WWW-Authenticate": 'Bearer realm="facesvc", ApiKey header="X-API-Key"'
    }


class ForbiddenError(FacesvcError):
    slug = "forbidden"
    status = 403
    title = "Scope missing"
    description = (
        "The key is valid but lacks the scope this operation needs (admin, enrol or verify)."
    )


class MalformedBodyError(FacesvcError):
    slug = "malformed-body"
    status = 400
    title = "Request body not readable"
    description = (
        "The body could not be read as its Content-Type says: JSON that is not valid UTF-8, or "
        "multipart/form-data without a boundary or with broken parts. Nothing was processed. "
        "Send JSON as UTF-8 and let your HTTP client build multipart bodies. (JSON that is "
        "UTF-8 but not valid JSON is a 422 `validation-error` naming where it broke.)"
    )


class PathNotFoundError(FacesvcError):
    slug = "not-found"
    status = 404
    title = "Not found"
    description = "No such route."


class MethodNotAllowedError(FacesvcError):
    slug = "method-not-allowed"
    status = 405
    title = "Method not allowed"
    description = "The route exists but not for this method."


class UploadsOnlyError(FacesvcError):
    slug = "uploads-only"
    status = 410
    title = "Images are uploads, never server paths"
    description = (
        "The seed tutorial read the image from a server path named in the query string "
        "(`GET /face_detect?url=...`), which let any caller read the server's files. facesvc "
        "takes the photo itself: `POST` it as the multipart field `image` (legacy routes also "
        "accept `file`), or use `POST /v1/detect`."
    )


class PayloadTooLargeError(FacesvcError):
    slug = "payload-too-large"
    status = 413
    title = "Upload too large"
    description = "The upload is larger than FACESVC_MAX_UPLOAD_BYTES."


class RequestTooLargeError(FacesvcError):
    slug = "request-too-large"
    status = 413
    title = "Request too large"
    description = (
        "The request body is larger than FACESVC_MAX_REQUEST_BYTES (by its Content-Length, "
        "or counted as a chunked body streamed in); nothing of it was processed."
    )


class HTTPError(FacesvcError):
    """Any other HTTP error the framework raises: its status is the instance's own."""

    slug = "http-error"
    status = 400
    title = "HTTP error"
    description = "See `detail`."

    def __init__(
        self, status: int, detail: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail, headers=headers)
        self.status = status


# --- the service's state --------------------------------------------------------------------


class NotReadyError(FacesvcError):
    slug = "not-ready"
    status = 503
    title = "Not ready"
    description = "A dependency (models or database) is not available."


class ModelsLoadingError(FacesvcError):
    slug = "models-loading"
    status = 503
    title = "Models are loading"
    description = (
        "The service is starting; retry after the Retry-After delay. /readyz says when it is ready."
    )
    default_headers: ClassVar[Mapping[str, str]] = {"Retry-After": "5"}


class QueueFullError(FacesvcError, RuntimeError):
    """The model's queue is full: the caller should retry later (HTTP 503 + Retry-After)."""

    slug = "overloaded"
    status = 503
    title = "Overloaded"
    description = (
        "A model's queue is full; retry after the Retry-After delay. "
        "Scale out or raise FACESVC_QUEUE_MAX_ITEMS if this is steady load."
    )
    default_headers: ClassVar[Mapping[str, str]] = {"Retry-After": "1"}

    def __init__(self, name: str, queued: int, limit: int) -> None:
        super().__init__(
            f"model {name!r} is overloaded: {queued} items queued (limit {limit})", model=name
        )
        self.name, self.queued, self.limit = name, queued, limit


class InternalError(FacesvcError):
    slug = "internal-error"
    status = 500
    title = "Internal error"
    description = (
        "An unexpected error; it has been logged. Please report it with the request's X-Request-ID."
    )


# --- uploaded images: raised by inference/images.py -----------------------------------------


class ImageError(FacesvcError, ValueError):
    """Every problem with an uploaded image."""


class EmptyImageError(ImageError):
    slug = "empty-image"
    status = 400
    title = "Empty image"
    description = "The uploaded file has no bytes."


class UnsupportedImageTypeError(ImageError):
    slug = "unsupported-image-type"
    status = 415
    title = "Unsupported image type"
    description = (
        "Send JPEG, PNG, WebP or BMP; the type is read from the file's content, not its name."
    )


class CorruptImageError(ImageError):
    slug = "corrupt-image"
    status = 400
    title = "Corrupt image"
    description = "The image could not be decoded: truncated or damaged."


class ImageTooLargeError(ImageError):
    slug = "image-too-large"
    status = 413
    title = "Image too large"
    description = "The image has more pixels than the service accepts (FACESVC_MAX_IMAGE_PIXELS)."

    def __init__(self, width: int, height: int, max_pixels: int) -> None:
        super().__init__(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
        self.width, self.height, self.max_pixels = width, height, max_pixels


# --- use cases: raised by services/ (and repositories/) -------------------------------------


class ServiceError(FacesvcError):
    """A use case refused: what the caller asked for cannot be done."""


class NotFoundError(ServiceError):
    status = 404


class ConflictError(ServiceError):
    status = 409


class UserNotFoundError(NotFoundError):
    slug = "user-not-found"
    title = "User not found"
    description = "No user has this id in your tenant."


class FaceNotFoundError(NotFoundError):
    slug = "face-not-found"
    title = "Face not found"
    description = "This user has no face with this id."


class KeyNotFoundError(NotFoundError):
    slug = "key-not-found"
    title = "API key not found"
    description = "Your tenant has no API key with this id."


class JobNotFoundError(NotFoundError):
    slug = "job-not-found"
    title = "Job not found"
    description = (
        "Your tenant has no job with this id (enrol jobs are visible only to keys with the "
        "enrol scope)."
    )


class DuplicateExternalIdError(ConflictError):
    """Raised by the users repository (its insert failed on the unique external_id)."""

    slug = "duplicate-external-id"
    title = "external_id already in use"
    description = "Another user has this external_id; external ids are unique."

    def __init__(self, external_id: str) -> None:
        super().__init__(f"a user with external_id {external_id!r} already exists")
        self.external_id = external_id


class JobFinishedError(ConflictError):
    slug = "job-finished"
    title = "Job already finished"
    description = "Only a queued or running job can be cancelled; this one has succeeded or failed."


class NoEnrolledFacesError(ServiceError):
    slug = "no-enrolled-faces"
    status = 409
    title = "The user has no enrolled faces"
    description = "Enrol at least one face before verifying this user."


class NoFaceError(ServiceError):
    slug = "no-face"
    status = 422
    title = "No face found"
    description = (
        "The detector found no face in the image. Send a sharper, "
        "better lit photo where the face is at least ~40 px wide."
    )


class MultipleFacesError(ServiceError):
    slug = "multiple-faces"
    status = 422
    title = "More than one face of similar size"
    description = "Enrolment needs one clear face: the second face is nearly as large as the first."


class ConsentRequiredError(ServiceError):
    slug = "consent-required"
    status = 422
    title = "Consent not recorded"
    description = (
        "Faces are biometric data: enrol only with the person's consent, sent as consent=true."
    )


class FaceQualityError(ServiceError):
    """The face is usable for matching but not good enough to enrol: one subclass per reason,
    whose slug is the reason ``inference.quality`` names (``for_reason``)."""

    status = 422

    @classmethod
    def for_reason(cls, reason: str) -> type[FaceQualityError]:
        found = next((c for c in catalogue() if issubclass(c, cls) and c.slug == reason), None)
        if found is None:
            raise KeyError(f"no face quality problem {reason!r}")
        return found


class FaceTooSmallError(FaceQualityError):
    slug = "face-too-small"
    title = "Face too small to enrol"
    description = "The face is smaller than the enrolment minimum; use a closer or larger photo."


class FaceTooBlurryError(FaceQualityError):
    slug = "face-too-blurry"
    title = "Face too blurred to enrol"
    description = "The face is not sharp enough (variance of the Laplacian below the minimum)."


class FaceTurnedAwayError(FaceQualityError):
    slug = "face-turned-away"
    title = "Face turned too far to enrol"
    description = "Enrol a photo where the person looks at the camera (yaw and pitch limits)."


class NotCalibratedError(ServiceError):
    slug = "not-calibrated"
    status = 422
    title = "No score calibration for this model"
    description = (
        "A `far` target needs the embedder's score calibration (manifest calibration_file, "
        "written by `facesvc eval calibrate`); use the default threshold instead."
    )


class LockedOutError(ServiceError):
    slug = "too-many-attempts"
    status = 429
    title = "Too many failed verifications"
    description = (
        "This user id failed verification too many times in a row; retry after the "
        "Retry-After delay, which grows with each further failure. A success resets it."
    )

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class AttributesUnavailableError(ServiceError):
    slug = "attributes-unavailable"
    status = 501
    title = "Attribute models not loaded"
    description = (
        "This service does not load the age, gender or expression network asked for "
        "(FACESVC_ATTRIBUTES=false, or its model manifest has no such entry); pose is always "
        "available. Ask its operator, or leave those out of `attributes`."
    )


class AttributesNotEnabledError(ServiceError):
    slug = "attributes-not-enabled"
    status = 403
    title = "Age, gender and expression are not enabled for your tenant"
    description = (
        "Age, gender and expression are estimated only for a tenant that turned them on, with "
        'an admin key: PATCH /v1/tenant {"sensitive_attributes": true}. They are off by '
        "default: the EU AI Act prohibits emotion recognition at work and in education "
        "(Art. 5(1)(f)), prohibits biometric categorisation by some traits (Art. 5(1)(g)) and "
        "makes both high-risk elsewhere (Annex III). Pose needs no setting."
    )


class LivenessSessionNotFoundError(NotFoundError):
    slug = "liveness-session-not-found"
    title = "Liveness session not found"
    description = (
        "No liveness session has this id in your tenant (or it was purged a week after it "
        "expired). Start one with POST /v1/liveness/sessions."
    )


class LivenessSessionExpiredError(ServiceError):
    slug = "liveness-session-expired"
    status = 410
    title = "Liveness session expired"
    description = (
        "The session's time (FACESVC_LIVENESS_SESSION_TTL_S) ran out before it was used to "
        "log in. Start a new session."
    )


class LivenessSessionUsedError(ConflictError):
    slug = "liveness-session-used"
    title = "Liveness session already used"
    description = (
        "A passed liveness session logs in once; this one already did. Start a new session."
    )


class LivenessNotPassedError(ConflictError):
    slug = "liveness-not-passed"
    title = "Liveness session has not passed"
    description = (
        "Only a passed session can log in: GET the session to see its status, and `reason` "
        "when it failed."
    )


class LivenessSessionEndedError(ConflictError):
    slug = "liveness-session-ended"
    title = "Liveness session has ended"
    description = (
        "The session passed, failed or expired: it takes no more frames. `status` says which."
    )


class LivenessSessionBusyError(ConflictError):
    slug = "liveness-session-busy"
    title = "Liveness session changed by another request"
    description = (
        "Two requests sent frames to one session at the same time; send a session's frames "
        "one request after the other, in capture order, and retry this one."
    )


class LivenessFaceMismatchError(ServiceError):
    slug = "liveness-face-mismatch"
    status = 422
    title = "The photo's face is not the liveness session's face"
    description = (
        "The face in the login photo is not the person who passed the liveness session. The "
        "session is used up; start a new one."
    )


class LivenessRequiredError(ServiceError):
    slug = "liveness-required"
    status = 422
    title = "A passed liveness session is required"
    description = (
        "Your tenant requires liveness for verification: pass a session "
        "(POST /v1/liveness/sessions, then its frames) and send its id as `liveness_session`."
    )


class TooManyFramesError(ServiceError):
    slug = "too-many-frames"
    status = 413
    title = "Too many frames in one request"
    description = (
        "Send at most FACESVC_LIVENESS_MAX_FRAMES_PER_REQUEST frames per request; send the "
        "rest in further requests."
    )


# --- start-up: not a problem type (no request is answered with it) --------------------------


class ConfigurationError(RuntimeError):
    """The settings are unsafe or inconsistent: the service refuses to start (raised by the
    container for the data key, by a gallery backend for its database)."""
