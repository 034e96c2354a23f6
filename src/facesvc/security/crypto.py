"""AES-256-GCM for embeddings at rest, with key ids so data keys can rotate.

``FACESVC_ENCRYPTION_KEY`` holds one or more data keys, ``id:base64url(32 bytes)``
separated by commas; the first encrypts new rows, the others only decrypt old ones until
``facesvc keys rotate-data`` has re-encrypted them. Each row's ciphertext is bound to the
face's id (associated data), so a blob copied onto another row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import uuid
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
NONCE_BYTES = 12


class EncryptionKeyError(ValueError):
    """FACESVC_ENCRYPTION_KEY is malformed, or a row names a key that is not configured."""


class DecryptionError(ValueError):
    """A stored blob does not decrypt under its key (tampered, or moved to another row)."""


def generate_data_key(key_id: str | None = None) -> str:
    """A new ``id:base64url-key`` entry for FACESVC_ENCRYPTION_KEY."""
    key_id = key_id or f"k{secrets.token_hex(4)}"
    if not _KEY_ID.match(key_id):
        raise EncryptionKeyError(f"key id {key_id!r}: use 1-64 of A-Z a-z 0-9 _ . -")
    return f"{key_id}:{base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip('=')}"


def parse_data_keys(value: str) -> dict[str, bytes]:
    """``{key id: 32-byte key}`` in the order given (the first is the active one)."""
    keys: dict[str, bytes] = {}
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep or not _KEY_ID.match(key_id):
            raise EncryptionKeyError(
                "each data key must read id:base64url-key (make one with "
                "`facesvc keys gen-data-key`)"
            )
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError) as exc:
            raise EncryptionKeyError(f"data key {key_id!r} is not base64url") from exc
        if len(raw) != 32:
            raise EncryptionKeyError(f"data key {key_id!r} must be 32 bytes, got {len(raw)}")
        if key_id in keys:
            raise EncryptionKeyError(f"data key id {key_id!r} appears twice")
        keys[key_id] = raw
    if not keys:
        raise EncryptionKeyError("no data key given")
    return keys


class EmbeddingCipher:
    """Encrypts with the active key; decrypts rows under any configured key.

    ``EmbeddingCipher(None)`` is dev mode: new rows are stored in the clear (key id None)."""

    def __init__(self, keys: dict[str, bytes] | None) -> None:
        self._aead = {key_id: AESGCM(raw) for key_id, raw in (keys or {}).items()}
        self.active_key_id: str | None = next(iter(self._aead), None)

    @classmethod
    def from_setting(cls, value: str | None) -> EmbeddingCipher:
        return cls(parse_data_keys(value) if value else None)

    @property
    def key_ids(self) -> list[str]:
        return list(self._aead)

    def encrypt(
        self, plain: bytes, row_id: uuid.UUID, purpose: bytes = b""
    ) -> tuple[bytes, str | None]:
        """``(stored bytes, key id)``: nonce + ciphertext + tag, or the plain bytes in dev mode.

        The row id (and ``purpose``, for a second blob of one row) is the associated data."""
        if self.active_key_id is None:
            return plain, None
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead[self.active_key_id].encrypt(nonce, plain, row_id.bytes + purpose)
        return nonce + sealed, self.active_key_id

    def decrypt(
        self, stored: bytes, key_id: str | None, row_id: uuid.UUID, purpose: bytes = b""
    ) -> bytes:
        if key_id is None:
            return stored
        aead = self._aead.get(key_id)
        if aead is None:
            raise EncryptionKeyError(
                f"a stored embedding is encrypted under key {key_id!r}, which "
                "FACESVC_ENCRYPTION_KEY does not hold"
            )
        try:
            return aead.decrypt(stored[:NONCE_BYTES], stored[NONCE_BYTES:], row_id.bytes + purpose)
        except InvalidTag as exc:
            raise DecryptionError(f"embedding of face {row_id} does not decrypt") from exc

    def seal(self, plain: bytes, associated: bytes) -> bytes:
        """``nonce + ciphertext + tag`` of ``plain`` under the active key (no dev-mode
        pass-through: callers that must not write plaintext check ``active_key_id`` first)."""
        if self.active_key_id is None:
            raise EncryptionKeyError("no active data key: nothing to seal with")
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead[self.active_key_id].encrypt(nonce, plain, associated)

    def unseal(self, stored: bytes, key_id: str, associated: bytes) -> bytes:
        """The inverse of :meth:`seal` (DecryptionError if tampered or bound to other data)."""
        aead = self._aead.get(key_id)
        if aead is None:
            raise EncryptionKeyError(f"key {key_id!r} is not in FACESVC_ENCRYPTION_KEY")
        try:
            return aead.decrypt(stored[:NONCE_BYTES], stored[NONCE_BYTES:], associated)
        except InvalidTag as exc:
            raise DecryptionError("a sealed blob does not decrypt") from exc

    def decrypt_rows(
        self,
        stored: Sequence[bytes],
        key_ids: Sequence[str | None],
        row_ids: Sequence[bytes],
    ) -> list[bytes]:
        """Many rows at once, as :meth:`decrypt` each (the bulk path of a gallery load: no
        uuid.UUID per row): three columns, a row id as its 16 bytes. Rows under one key (the
        usual case) are decrypted in one comprehension."""
        keys = set(key_ids)
        if len(keys) == 1:
            (key_id,) = keys
            if key_id is None:
                return list(stored)
            box = self._box(key_id)
            try:
                return [
                    box.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], row_id)
                    for blob, row_id in zip(stored, row_ids, strict=True)
                ]
            except InvalidTag:
                pass  # name the row below
        out = []
        for blob, key_id, row_id in zip(stored, key_ids, row_ids, strict=True):
            if key_id is None:
                out.append(blob)
                continue
            try:
                out.append(
                    self._box(key_id).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], row_id)
                )
            except InvalidTag as exc:
                raise DecryptionError(
                    f"embedding of face {uuid.UUID(bytes=bytes(row_id))} does not decrypt"
                ) from exc
        return out

    def _box(self, key_id: str) -> AESGCM:
        box = self._aead.get(key_id)
        if box is None:
            raise EncryptionKeyError(
                f"a stored embedding is encrypted under key {key_id!r}, which "
                "FACESVC_ENCRYPTION_KEY does not hold"
            )
        return box
