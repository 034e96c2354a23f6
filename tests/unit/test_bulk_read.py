"""The embedded gallery's cold read (facesvc.gallery.bulk_read) on a real SQLite file: what it
reads back equals what was stored (ids, tenants, vectors), and every bad row is a clear error
naming what is wrong (another dimension, a tampered blob, a key the service lacks)."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine

from facesvc.db.codec import EMBEDDING_DTYPE, encode_embedding
from facesvc.db.models import Base
from facesvc.gallery.bulk_read import STORED_DTYPE, read_sqlite
from facesvc.security.crypto import (
    DecryptionError,
    EmbeddingCipher,
    EncryptionKeyError,
    generate_data_key,
)

MODEL = "facenet"
NOW = "2026-01-01 00:00:00.000000"


def test_the_stored_dtype_is_the_codecs() -> None:
    assert STORED_DTYPE == EMBEDDING_DTYPE


class Gallery:
    """A migrated-shape SQLite file and helpers to store faces the way FaceRepository does."""

    def __init__(self, path: Path, cipher: EmbeddingCipher) -> None:
        self.path = path
        self.cipher = cipher
        engine = create_engine(f"sqlite:///{path}")
        Base.metadata.create_all(engine)
        engine.dispose()
        with sqlite3.connect(path) as db:
            db.execute("INSERT INTO gallery_state (id, version) VALUES (1, 7)")
        self.stored: dict[uuid.UUID, tuple[uuid.UUID, uuid.UUID, np.ndarray]] = {}

    def tenant(self) -> uuid.UUID:
        tenant = uuid.uuid4()
        with sqlite3.connect(self.path) as db:
            db.execute(
                "INSERT INTO tenants (id, name, require_liveness, created_at) VALUES (?, ?, 0, ?)",
                (tenant.hex, f"t-{tenant.hex[:8]}", NOW),
            )
        return tenant

    def add(
        self,
        tenant: uuid.UUID,
        vector: np.ndarray,
        *,
        cipher: EmbeddingCipher | None = None,
        model: str = MODEL,
    ) -> uuid.UUID:
        user, face = uuid.uuid4(), uuid.uuid4()
        sealed, key_id = (cipher or self.cipher).encrypt(encode_embedding(vector), face)
        with sqlite3.connect(self.path) as db:
            db.execute(
                "INSERT INTO users (id, name, tenant_id, created_at, updated_at) "
                "VALUES (?, 'x', ?, ?, ?)",
                (user.hex, tenant.hex, NOW, NOW),
            )
            db.execute(
                "INSERT INTO faces (id, user_id, embedding, key_id, embedding_dim, model_name, "
                "model_version, box_x, box_y, box_width, box_height, image_width, "
                "image_height, detection_score, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, 'v', 0, 0, 1, 1, 1, 1, 1, ?)",
                (face.hex, user.hex, sealed, key_id, len(vector), model, NOW),
            )
        if model == MODEL:
            self.stored[face] = (user, tenant, vector)
        return face


def unit(rng: np.random.Generator, dim: int = 128) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def cipher() -> EmbeddingCipher:
    return EmbeddingCipher.from_setting(generate_data_key("k1"))


def check(gallery: Gallery, dim: int | None = 128) -> None:
    rows = read_sqlite(str(gallery.path), MODEL, dim, gallery.cipher)
    assert rows.version == 7
    assert len(rows.vectors) == len(gallery.stored)
    for i in range(len(rows.vectors)):
        face = uuid.UUID(bytes=rows.face_ids[i].tobytes())
        user, tenant, vector = gallery.stored[face]
        assert uuid.UUID(bytes=rows.user_ids[i].tobytes()) == user
        assert rows.tenants[rows.tenant_of_row[i]] == tenant
        np.testing.assert_array_equal(rows.vectors[i], vector)


@pytest.mark.parametrize("tenants", [1, 3])
def test_reads_back_every_face_of_the_model(
    tmp_path: Path, cipher: EmbeddingCipher, tenants: int
) -> None:
    """One tenant (no join) and several (tenant ids concatenated in SQL, coded in numpy);
    another model's faces are left out."""
    gallery = Gallery(tmp_path / "g.db", cipher)
    rng = np.random.default_rng(1)
    owners = [gallery.tenant() for _ in range(tenants)]
    for i in range(300):
        gallery.add(owners[i % tenants], unit(rng))
    gallery.add(owners[0], unit(rng), model="other")
    check(gallery)
    check(gallery, dim=None)  # the rows' own dimension


def test_dev_mode_rows_and_a_retired_key_read_beside_the_active_one(tmp_path: Path) -> None:
    old = generate_data_key("old")
    new = generate_data_key("new")
    both = EmbeddingCipher.from_setting(f"{new},{old}")
    gallery = Gallery(tmp_path / "g.db", both)
    tenant = gallery.tenant()
    rng = np.random.default_rng(2)
    gallery.add(tenant, unit(rng), cipher=EmbeddingCipher.from_setting(old))
    gallery.add(tenant, unit(rng), cipher=EmbeddingCipher(None))  # stored in the clear
    gallery.add(tenant, unit(rng))
    check(gallery)


def test_an_empty_gallery(tmp_path: Path, cipher: EmbeddingCipher) -> None:
    gallery = Gallery(tmp_path / "g.db", cipher)
    rows = read_sqlite(str(gallery.path), MODEL, 128, cipher)
    assert rows.vectors.shape == (0, 128)
    assert rows.tenants == []


def test_a_face_of_another_dimension_is_named(tmp_path: Path, cipher: EmbeddingCipher) -> None:
    gallery = Gallery(tmp_path / "g.db", cipher)
    tenant = gallery.tenant()
    rng = np.random.default_rng(3)
    gallery.add(tenant, unit(rng))
    gallery.add(tenant, unit(rng, 64))
    with pytest.raises(ValueError, match=r"\[64\]-d faces; the embedder gives 128-d"):
        read_sqlite(str(gallery.path), MODEL, 128, cipher)


def test_a_tampered_row_names_its_face(tmp_path: Path, cipher: EmbeddingCipher) -> None:
    gallery = Gallery(tmp_path / "g.db", cipher)
    tenant = gallery.tenant()
    rng = np.random.default_rng(4)
    for _ in range(5):
        gallery.add(tenant, unit(rng))
    victim = gallery.add(tenant, unit(rng))
    with sqlite3.connect(gallery.path) as db:
        (blob,) = db.execute("SELECT embedding FROM faces WHERE id = ?", (victim.hex,)).fetchone()
        flipped = blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]
        db.execute("UPDATE faces SET embedding = ? WHERE id = ?", (flipped, victim.hex))
    with pytest.raises(DecryptionError, match=str(victim)):
        read_sqlite(str(gallery.path), MODEL, 128, cipher)


def test_a_row_swapped_to_another_face_does_not_decrypt(
    tmp_path: Path, cipher: EmbeddingCipher
) -> None:
    """The face id is the associated data: a blob copied onto another row is refused."""
    gallery = Gallery(tmp_path / "g.db", cipher)
    tenant = gallery.tenant()
    rng = np.random.default_rng(5)
    a, b = gallery.add(tenant, unit(rng)), gallery.add(tenant, unit(rng))
    with sqlite3.connect(gallery.path) as db:
        (blob,) = db.execute("SELECT embedding FROM faces WHERE id = ?", (a.hex,)).fetchone()
        db.execute("UPDATE faces SET embedding = ? WHERE id = ?", (blob, b.hex))
    with pytest.raises(DecryptionError, match=str(b)):
        read_sqlite(str(gallery.path), MODEL, 128, cipher)


def test_a_key_the_service_lacks_is_named(tmp_path: Path, cipher: EmbeddingCipher) -> None:
    gallery = Gallery(tmp_path / "g.db", cipher)
    gallery.add(gallery.tenant(), unit(np.random.default_rng(6)))
    other = EmbeddingCipher.from_setting(generate_data_key("k2"))
    with pytest.raises(EncryptionKeyError, match="'k1'"):
        read_sqlite(str(gallery.path), MODEL, 128, other)
