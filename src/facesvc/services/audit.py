"""The audit trail: one row per enrol, verify, identify, delete and key change.

Rows are written in the same transaction as the change they describe, so a change is never
stored without its row (nor a row without its change). Never an image or an embedding.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.models import AuditEvent
from facesvc.observability.request_id import current_request_id
from facesvc.repositories.audit import AuditRepository
from facesvc.security.keys import Caller

ACTIONS = (
    "user.create",
    "user.delete",
    "face.enrol",
    "face.delete",
    "verify",
    "identify",
    "liveness",
    "key.create",
    "key.revoke",
    "data.rotate",
    "tenant.update",
)


class AuditTrail:
    def __init__(self, session: AsyncSession, caller: Caller) -> None:
        self.caller = caller
        self._events = AuditRepository(session)

    async def record(
        self,
        action: str,
        result: str,
        *,
        user_id: uuid.UUID | None = None,
        similarity: float | None = None,
    ) -> None:
        await self._events.add(self.event(action, result, user_id=user_id, similarity=similarity))

    def event(
        self,
        action: str,
        result: str,
        *,
        user_id: uuid.UUID | None = None,
        similarity: float | None = None,
    ) -> AuditEvent:
        """The row, built here (with this request's id) to be written by a writer elsewhere."""
        return AuditEvent(
            tenant_id=self.caller.tenant_id,
            key_id=self.caller.key_id,
            actor=self.caller.actor,
            action=action,
            user_id=user_id,
            result=result,
            similarity=None if similarity is None else round(float(similarity), 6),
            request_id=current_request_id(),
        )

    async def page(
        self,
        *,
        limit: int,
        offset: int,
        action: str | None = None,
        user_id: uuid.UUID | None = None,
        since: datetime | None = None,
    ) -> tuple[list[AuditEvent], int]:
        return await self._events.page(
            self.caller.tenant_id,
            limit=limit,
            offset=offset,
            action=action,
            user_id=user_id,
            since=since,
        )
