"""Lockout after failed verifications: the policy (how long) and the guard that counts
attempts before anything is compared."""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.db.models import utcnow
from facesvc.errors import LockedOutError
from facesvc.repositories.attempts import LoginAttemptRepository


@dataclass(frozen=True)
class LockoutPolicy:
    """After ``max_failures`` consecutive failed verifications of one user id, refuse it for
    ``base_delay_s``, doubling with each further failure up to ``max_delay_s`` (NIST SP
    800-63B 5.2.2 rate limiting). A successful verification resets the count."""

    max_failures: int = 5
    base_delay_s: float = 30.0
    max_delay_s: float = 3600.0

    def delay_after(self, failures: int) -> float | None:
        if failures < self.max_failures:
            return None
        doublings = min(failures - self.max_failures, 40)  # 2**40 x base: past any max
        return float(min(self.max_delay_s, self.base_delay_s * 2.0**doublings))


T = TypeVar("T")


class LockoutGuard:
    """Counts verification attempts per (tenant, tried id) in transactions of their own,
    committed BEFORE the probe is compared: concurrent attempts cannot all slip in while
    the first ones are still being computed.

    The attempt that reaches ``max_failures`` in a row already sets the lock; a match
    clears both (in the request's own transaction). While locked nothing is compared and
    nothing more is counted."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], policy: LockoutPolicy
    ) -> None:
        self.sessionmaker = sessionmaker
        self.policy = policy

    async def begin(
        self,
        tenant_id: uuid.UUID,
        subject_id: uuid.UUID,
        then: Callable[[AsyncSession], Awaitable[T]],
    ) -> T:
        """Count the attempt; unless the id is locked, run ``then`` (the reads the comparison
        needs) in the same transaction, which commits the count before anything is compared:
        one transaction, not two. A locked id raises ``LockedOutError`` having read nothing."""
        now = utcnow()
        async with session_scope(self.sessionmaker) as session:
            attempts = LoginAttemptRepository(session)
            counted = await attempts.begin_attempt(tenant_id, subject_id, now)
            if counted is not None:
                delay = self.policy.delay_after(counted)
                if delay is not None:
                    await attempts.lock(tenant_id, subject_id, now + timedelta(seconds=delay))
                return await then(session)
            row = await attempts.get(tenant_id, subject_id)
        until = row.locked_until if row is not None and row.locked_until else now
        wait = max(1, math.ceil((until - now).total_seconds()))
        raise LockedOutError(
            f"too many failed verifications for this user; retry in {wait} s",
            retry_after=wait,
        )
