"""Errors the repositories raise for conditions a caller is expected to handle."""

from __future__ import annotations


class RepositoryError(Exception):
    """Base class of the repositories' own errors."""


class DuplicateExternalIdError(RepositoryError):
    """A user with this ``external_id`` already exists."""

    def __init__(self, external_id: str) -> None:
        super().__init__(f"a user with external_id {external_id!r} already exists")
        self.external_id = external_id
