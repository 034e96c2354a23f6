"""Embedding <-> bytes codec: float32 little-endian, so a blob reads the same on any host."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

EMBEDDING_DTYPE = np.dtype("<f4")


def encode_embedding(vec: npt.NDArray[np.floating]) -> bytes:
    """The bytes stored in ``faces.embedding`` for a 1-D vector."""
    arr = np.asarray(vec)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"an embedding must be a non-empty 1-D vector, got shape {arr.shape}")
    return arr.astype(EMBEDDING_DTYPE, copy=False).tobytes()


def decode_embedding(blob: bytes) -> npt.NDArray[np.float32]:
    """A writable native float32 vector from bytes written by :func:`encode_embedding`."""
    if len(blob) == 0 or len(blob) % EMBEDDING_DTYPE.itemsize:
        raise ValueError(
            f"an embedding blob must be a non-empty multiple of 4 bytes, got {len(blob)}"
        )
    return np.frombuffer(blob, dtype=EMBEDDING_DTYPE).astype(np.float32)


def decode_embeddings(blobs: list[bytes], dim: int) -> npt.NDArray[np.float32]:
    """Stack blobs of one dimension into an ``(n, dim)`` float32 matrix (``(0, dim)`` if none)."""
    expected = dim * EMBEDDING_DTYPE.itemsize
    for blob in blobs:
        if len(blob) != expected:
            raise ValueError(f"embedding of {len(blob)} bytes where {expected} were expected")
    flat = np.frombuffer(b"".join(blobs), dtype=EMBEDDING_DTYPE)
    return flat.reshape(len(blobs), dim).astype(np.float32)
