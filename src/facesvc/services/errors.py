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
