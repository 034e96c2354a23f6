"""Database layer: ORM models, engine and session factory, migrations."""

from facesvc.db.codec import decode_embedding, encode_embedding
from facesvc.db.engine import create_engine, create_sessionmaker, ping, session_scope
from facesvc.db.models import Base, Face, User

__all__ = [
    "Base",
    "Face",
    "User",
    "create_engine",
    "create_sessionmaker",
    "decode_embedding",
    "encode_embedding",
    "ping",
    "session_scope",
]
