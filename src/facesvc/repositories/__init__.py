"""Repositories: the only place that writes SQL. They flush, never commit."""

from facesvc.repositories.faces import FaceRepository
from facesvc.repositories.users import UserRepository

__all__ = ["FaceRepository", "UserRepository"]
