"""The current request's id, readable anywhere below the middleware (logs, problem bodies)."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar, Token

REQUEST_ID_HEADER = "X-Request-ID"

# What we accept from a client or proxy: short and log-safe (no spaces, quotes or newlines).
_VALID = re.compile(r"[A-Za-z0-9._-]{1,128}")

_current: ContextVar[str | None] = ContextVar("facesvc_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served in this context, or None outside a request."""
    return _current.get()


def accept_or_generate(incoming: str | None) -> str:
    """The client's id when it is valid, else a fresh one (32 hex characters)."""
    if incoming is not None and _VALID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def bind_request_id(request_id: str) -> Token[str | None]:
    return _current.set(request_id)


def unbind_request_id(token: Token[str | None]) -> None:
    _current.reset(token)
