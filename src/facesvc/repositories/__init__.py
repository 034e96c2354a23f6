"""Repositories: the only place that writes SQL. They flush, never commit."""

from facesvc.repositories.errors import DuplicateExternalIdError, RepositoryError
from facesvc.repositories.faces import FaceRepository
from facesvc.repositories.users import UserRepository

__all__ = ["DuplicateExternalIdError", "FaceRepository", "RepositoryError", "UserRepository"]
