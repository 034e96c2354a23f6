"""API keys: generation, hashing, scopes, and who is calling.

A key reads ``fsk_<40 url-safe random characters>`` (240 bits). Only its SHA-256 is stored;
a presented key is hashed and looked up by that hash, then compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

KEY_PREFIX = "fsk_"
SCOPES = ("admin", "enrol", "verify")
# What each scope allows, as a set of scopes it includes.
_IMPLIED = {
    "admin": frozenset(SCOPES),
    "enrol": frozenset({"enrol"}),
    "verify": frozenset({"verify"}),
}
MIN_KEY_LENGTH = 20  # for operator-chosen keys (FACESVC_BOOTSTRAP_API_KEY)
DISPLAY_PREFIX_LENGTH = 12


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(30)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def hashes_match(presented_hash: str, stored_hash: str) -> bool:
    return hmac.compare_digest(presented_hash.encode(), stored_hash.encode())


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_LENGTH]


def normalise_scopes(scopes: list[str] | tuple[str, ...] | set[str]) -> str:
    """Validated, de-duplicated, space-separated scopes in canonical order."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}; got {sorted(scopes)}")
    return " ".join(s for s in SCOPES if s in scopes)


@dataclass(frozen=True)
class Caller:
    """Who makes a call: their tenant, their key (None for the CLI) and the key's scopes."""

    tenant_id: uuid.UUID
    key_id: uuid.UUID | None
    actor: str
    scopes: frozenset[str]
    # the tenant's require_liveness when the caller was authenticated (cached with the key, so
    # a verification reads no tenant row; a change empties every worker's cache); None: not
    # known (the CLI, a job): read the tenant when it matters
    require_liveness: bool | None = None
    # the tenant's sensitive_attributes (age, gender, expression allowed), read and cached the
    # same way; None: not known, read the tenant
    sensitive_attributes: bool | None = None

    def allows(self, scope: str) -> bool:
        return any(scope in _IMPLIED[granted] for granted in self.scopes if granted in _IMPLIED)

    @classmethod
    def operator(cls, tenant_id: uuid.UUID, actor: str = "cli") -> Caller:
        """The person at the console (CLI commands): every scope, no key."""
        return cls(tenant_id=tenant_id, key_id=None, actor=actor, scopes=frozenset(SCOPES))
