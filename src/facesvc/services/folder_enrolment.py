"""Enrol a folder tree ``NAME/photo.jpg`` (one folder per person), batched through the models."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.db.models import Face
from facesvc.errors import ServiceError
from facesvc.gallery.backend import Gallery
from facesvc.repositories.users import UserRepository
from facesvc.security.keys import Caller
from facesvc.services.analysis import FaceAnalysisService
from facesvc.services.enrolment import EnrolmentOptions, EnrolmentService

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@dataclass
class FolderReport:
    people: int = 0
    users_created: int = 0
    enrolled: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # problem slug -> photos


def people_in(root: Path) -> list[tuple[str, list[Path]]]:
    """(person, photos) for every sub-folder of ``root`` that holds images, sorted."""
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            found.append((folder.name, photos))
    return found


async def enrol_folder(
    root: Path,
    sessionmaker: async_sessionmaker[AsyncSession],
    analysis: FaceAnalysisService,
    gallery: Gallery,
    caller: Caller,
    *,
    consent: bool,
    options: EnrolmentOptions | None = None,
    concurrency: int = 8,
    progress: Callable[[int], None] | None = None,
) -> FolderReport:
    """Each person becomes (or is found as) the user whose external_id is ``folder:NAME``;
    their photos go through bulk enrolment. Re-running adds photos again (no dedup)."""
    report = FolderReport()
    semaphore = asyncio.Semaphore(concurrency)

    async def one(name: str, photos: list[Path]) -> None:
        async with semaphore:
            data = [await asyncio.to_thread(p.read_bytes) for p in photos]
            async with session_scope(sessionmaker) as session:
                users = UserRepository(session, caller.tenant_id)
                external_id = f"folder:{name}"
                user = await users.get_by_external_id(external_id)
                if user is None:
                    user = await users.add(name.replace("_", " "), external_id=external_id)
                    report.users_created += 1
                enrolment = EnrolmentService(session, analysis, gallery, caller, options)
                outcomes = await enrolment.enrol_many(user.id, data, consent=consent)
            for outcome in outcomes:
                if isinstance(outcome, Face):
                    report.enrolled += 1
                else:
                    reason = (
                        outcome.slug
                        if isinstance(outcome, ServiceError)
                        else (type(outcome).__name__)
                    )
                    report.failed[reason] = report.failed.get(reason, 0) + 1
            report.people += 1
            if progress:
                progress(len(photos))

    await asyncio.gather(*(one(name, photos) for name, photos in people_in(root)))
    return report
