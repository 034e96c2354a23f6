"""Lockout after failed verifications: the policy (how long) and the guard that counts
attempts before anything is compared."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.db.group_writer import Writer
from facesvc.db.models import utcnow
from facesvc.errors import LockedOutError
from facesvc.repositories.attempts import LoginAttemptRepository
from facesvc.settings import Settings


@dataclass(frozen=True)
class LockoutPolicy:
    """After ``max_failures`` consecutive failed verifications of one user id, refuse it for
    ``base_delay_s``, doubling with each further failure up to ``max_delay_s`` (NIST SP
    800-63B 5.2.2 rate limiting). A successful verification resets the count."""

    max_failures: int = 5
    base_delay_s: float = 30.0
    max_delay_s: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LockoutPolicy:
        return cls(
            max_failures=settings.lockout_max_failures,
            base_delay_s=settings.lockout_base_delay_s,
            max_delay_s=settings.lockout_max_delay_s,
        )

    def delay_after(self, failures: int) -> float | None:
        if failures < self.max_failures:
            return None
        doublings = min(failures - self.max_failures, 40)  # 2**40 x base: past any max
        return float(min(self.max_delay_s, self.base_delay_s * 2.0**doublings))


class LockoutGuard:
    """Counts verification attempts per (tenant, tried id), committed BEFORE the probe is
    compared: concurrent attempts cannot all slip in while the first ones are still being
    computed. The count is a small write handed to the process's writer (group-committed
    with other requests' on SQLite, a transaction of its own on PostgreSQL).

    The attempt that reaches ``max_failures`` in a row already sets the lock; a match
    clears both (with the request's audit row). While locked nothing is compared and
    nothing more is counted."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        writer: Writer,
        policy: LockoutPolicy,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.writer = writer
        self.policy = policy

    @asynccontextmanager
    async def attempt(
        self, tenant_id: uuid.UUID, subject_id: uuid.UUID
    ) -> AsyncIterator[AsyncSession]:
        """Count the attempt; once the count is committed and unless the id is locked, the
        block gets a read session (the reads the comparison needs: a short transaction of its
        own, ended with the block). A locked id raises ``LockedOutError`` having read
        nothing, and the block does not run."""
        now = utcnow()

        async def count(session: AsyncSession) -> datetime | None:
            """None when counted; the end of the lock when locked (nothing counted)."""
            attempts = LoginAttemptRepository(session)
            counted = await attempts.begin_attempt(tenant_id, subject_id, now)
            if counted is None:
                row = await attempts.get(tenant_id, subject_id)
                return row.locked_until if row is not None and row.locked_until else now
            delay = self.policy.delay_after(counted)
            if delay is not None:
                await attempts.lock(tenant_id, subject_id, now + timedelta(seconds=delay))
            return None

        until = await self.writer.run(count)
        if until is not None:
            wait = max(1, math.ceil((until - now).total_seconds()))
            raise LockedOutError(
                f"too many failed verifications for this user; retry in {wait} s",
                retry_after=wait,
            )
        async with session_scope(self.sessionmaker) as session:
            yield session
