"""The application's state, built by the lifespan and read by the dependencies."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.inference.pipeline import FacePipeline
from facesvc.inference.registry import ModelRegistry
from facesvc.services.analysis import FaceAnalysisService
from facesvc.services.gallery import GallerySync
from facesvc.settings import Settings

log = logging.getLogger("facesvc")


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    registry: ModelRegistry
    pipeline: FacePipeline
    analysis: FaceAnalysisService
    gallery: GallerySync
    models_error: str | None = None
    models_ready: asyncio.Event = field(default_factory=asyncio.Event)
    _loader: asyncio.Task[None] | None = None

    async def load_models(self) -> None:
        try:
            await self.registry.start()
            async with session_scope(self.sessionmaker) as session:
                index = await self.gallery.ensure_current(session)
            log.info("gallery loaded: %d faces of %d users", len(index), index.users)
        except Exception as exc:  # reported by /readyz and the log, never swallowed
            self.models_error = f"{type(exc).__name__}: {exc}"
            log.exception("model loading failed")
            raise
        finally:
            self.models_ready.set()
        log.info(
            "models ready: %s",
            ", ".join(
                f"{m.name} on {m.device} ({m.load_seconds + m.warmup_seconds:.1f}s)"
                for m in self.registry.info()
            ),
        )


def build_state(settings: Settings) -> AppState:
    """Everything the service runs on (models not loaded yet: ``await load_models()``).

    Used by the app's lifespan and by CLI commands that work in-process (``enrol``)."""
    from facesvc.db.engine import create_engine, create_sessionmaker
    from facesvc.gallery.ann import HNSWIndex
    from facesvc.gallery.index import GalleryIndex

    engine = create_engine(settings.database_url)
    registry = ModelRegistry(settings)
    pipeline = FacePipeline(registry)
    index = GalleryIndex(
        registry.embedder_spec.embedding_space,
        ann=HNSWIndex(128) if settings.gallery_backend == "hnsw" else None,
        ann_min_size=settings.gallery_ann_min_size,
    )
    return AppState(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        registry=registry,
        pipeline=pipeline,
        analysis=FaceAnalysisService(pipeline, settings.enrol_second_face_ratio),
        gallery=GallerySync(index),
    )
