"""Data-key rotation (services/data_keys.py) on a real SQLite database built by the migrations."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db import session_scope
from facesvc.db.models import DEFAULT_TENANT_ID, AuditEvent
from facesvc.repositories import FaceRepository, UserRepository
from facesvc.security.crypto import EmbeddingCipher, generate_data_key
from facesvc.services.data_keys import rotate_data_keys
from tests.support.gallery import add_face


async def test_rotation_moves_every_face_to_the_active_key_and_is_audited(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    old_key = generate_data_key("old")
    old = EmbeddingCipher.from_setting(old_key)
    vectors = np.eye(3, 128, dtype=np.float32)
    async with session_scope(sessions) as session:
        user = await UserRepository(session, DEFAULT_TENANT_ID).add("Ann")
        for vector in vectors:
            await add_face(
                session,
                old,
                user.id,
                vector,
                model_name="facenet",
                box=(10.0, 20.0, 30.0, 40.0),
                image_size=(640, 480),
                detection_score=0.99,
            )

    both = EmbeddingCipher.from_setting(f"{generate_data_key('new')},{old_key}")
    seen: list[tuple[int, int]] = []
    done = await rotate_data_keys(sessions, both, batch=2, progress=lambda *p: seen.append(p))
    assert (done.key_id, done.faces, done.photos) == ("new", 3, 0)
    assert done.faces_by_key == {"new": 3}
    assert seen == [(0, 3), (2, 3), (3, 3)]
    async with sessions() as session:
        _, matrix = await FaceRepository(session, both).embeddings_for_user(user.id, "facenet")
        assert matrix.tobytes() == vectors.tobytes()
        events = (await session.scalars(select(AuditEvent))).all()
    assert [(e.tenant_id, e.action, e.result) for e in events] == [
        (DEFAULT_TENANT_ID, "data.rotate", "ok:new")
    ]

    again = await rotate_data_keys(sessions, both)  # safe to re-run: nothing left to change
    assert (again.faces, again.faces_by_key) == (0, {"new": 3})


async def test_rotation_needs_an_active_key(sessions: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(ValueError, match="no active data key"):
        await rotate_data_keys(sessions, EmbeddingCipher(None))
