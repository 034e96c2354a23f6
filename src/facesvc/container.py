"""The container: everything the service runs on (engine, models, services, the policies
built from the settings) and the background tasks that go with them (model loading, the job
runner).

The app's lifespan builds it with ``build_state(settings)``, then calls ``start()`` and
``stop()``; the dependencies (api/deps.py) read it."""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass, field, replace

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.db.group_writer import DirectWriter, Writer
from facesvc.errors import ConfigurationError, NotReadyError
from facesvc.gallery.backend import Gallery
from facesvc.inference.pipeline import FacePipeline, PipelineLimits
from facesvc.inference.registry import ModelFileError, ModelRegistry
from facesvc.security.crypto import EmbeddingCipher
from facesvc.services.analysis import FaceAnalysisService
from facesvc.services.enrolment import EnrolmentOptions
from facesvc.services.keys import CallerCache, KeyChangeStamp
from facesvc.services.liveness.service import LivenessPolicy
from facesvc.services.recognition.service import RecognitionPolicy
from facesvc.settings import Settings
from facesvc.workers.job_runner import JobRunner

log = logging.getLogger("facesvc")


@dataclass(frozen=True)
class Policies:
    """How each part decides, from the settings: every policy is built by its own
    ``from_settings`` (beside it), all of them once, by ``build_state``; the dependencies pass
    each service its piece. ``recognition`` needs the loaded embedder's threshold and
    calibration: None until the models are loaded, then set once (``with_models``)."""

    pipeline: PipelineLimits
    enrolment: EnrolmentOptions
    liveness: LivenessPolicy
    recognition: RecognitionPolicy | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Policies:
        """Raises ValueError for settings a policy refuses (unknown liveness challenges)."""
        return cls(
            pipeline=PipelineLimits.from_settings(settings),
            enrolment=EnrolmentOptions.from_settings(settings),
            liveness=LivenessPolicy.from_settings(settings),
        )

    def with_models(self, settings: Settings, registry: ModelRegistry) -> Policies:
        """These policies and the recognition policy of the loaded embedder."""
        return replace(self, recognition=RecognitionPolicy.from_settings(settings, registry))


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    registry: ModelRegistry
    pipeline: FacePipeline
    analysis: FaceAnalysisService
    gallery: Gallery
    cipher: EmbeddingCipher
    writer: Writer
    policies: Policies
    callers: CallerCache = field(default_factory=lambda: CallerCache(None))
    models_error: str | None = None
    stale_faces: dict[str, int] = field(default_factory=dict)  # other models' faces
    models_ready: asyncio.Event = field(default_factory=asyncio.Event)
    _loader: asyncio.Task[None] | None = None
    _checks: asyncio.Task[None] | None = None
    job_runner: JobRunner | None = None

    async def start(self) -> None:
        """Store the bootstrap key, load the models (in the background, so the server answers
        /livez at once, unless FACESVC_STARTUP_WAIT_FOR_MODELS) and start the job runner,
        which waits for them. A database older than the code's migrations is refused."""
        from facesvc.db.migrate import check_schema

        await check_schema(self.engine)
        await self.store_bootstrap_key()
        self.writer.start()
        if self.settings.startup_wait_for_models:
            await self.load_models()  # this worker takes no connection before it is ready
        else:
            self._loader = asyncio.create_task(self.load_models(), name="load-models")
        self._start_job_runner()

    async def stop(self) -> None:
        """Stop the job runner (it hands its job back before the engine closes) and a model
        loading still under way, then close the models and the engine."""
        if self.job_runner is not None:
            await self.job_runner.stop()
        await self.writer.stop()  # the batch under way commits; later writes are refused
        for task in (self._loader, self._checks):
            if task is not None:
                if not task.done():
                    task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.registry.aclose()
        close_gallery = getattr(self.gallery, "close", None)  # a shared snapshot to let go of
        if close_gallery is not None:
            close_gallery()
        await self.engine.dispose()

    def _start_job_runner(self) -> None:
        """Run queued jobs in this worker once the models are ready (unless
        FACESVC_JOB_RUNNER_ENABLED=false: this worker then only accepts jobs)."""
        if not self.settings.job_runner_enabled:
            return
        self.job_runner = JobRunner(
            self.sessionmaker,
            self.analysis,
            self.gallery,
            self.cipher,
            poll_interval_s=self.settings.job_poll_interval_s,
            enrolment=self.policies.enrolment,
        )
        self.job_runner.start(self._models_usable)

    @property
    def recognition_policy(self) -> RecognitionPolicy:
        """``policies.recognition``, built once when the models are loaded (``load_models``).
        Built here, per call, only while it is not set: in the moment between the last
        model's warm-up and ``load_models`` going on (requests pass ``models_ready`` by
        then), and for an embedder with neither a threshold nor a calibration: nothing can be
        decided with it, so every recognition request answers 503 ``not-ready`` naming the
        command that calibrates it (detection, landmarks and embeddings still work)."""
        if self.policies.recognition is not None:
            return self.policies.recognition
        try:
            return RecognitionPolicy.from_settings(self.settings, self.registry)
        except ModelFileError as exc:
            raise NotReadyError(
                f"verification, identification and liveness are unavailable: {exc}"
            ) from exc

    async def _models_usable(self) -> bool:
        await self.models_ready.wait()
        return self.models_error is None and self.registry.ready

    async def store_bootstrap_key(self) -> None:
        """FACESVC_BOOTSTRAP_API_KEY becomes the first admin key when there is none yet."""
        from sqlalchemy.exc import IntegrityError

        from facesvc.services.keys import ensure_bootstrap_key

        secret = self.settings.bootstrap_api_key
        if secret is None:
            return
        try:
            async with session_scope(self.sessionmaker) as session:
                await ensure_bootstrap_key(session, secret.get_secret_value())
        except IntegrityError:  # another worker stored it first
            log.info("bootstrap key already stored by another worker")

    async def _check_embedding_space(self) -> None:
        """A model change is detected here: faces embedded by another model are not
        comparable with the current one; they stay out of matching until `facesvc reembed`
        (or re-enrolment) recomputes them."""
        from facesvc.services.reembed import stale_face_counts

        space = self.pipeline.embedding_space
        self.stale_faces = await stale_face_counts(self.sessionmaker, self.cipher, space)
        if self.stale_faces:
            log.warning(
                "%d stored faces come from other models (%s), not %r: they are not matched "
                "until `facesvc reembed` recomputes them (or they are enrolled again)",
                sum(self.stale_faces.values()),
                ", ".join(f"{name}: {n}" for name, n in sorted(self.stale_faces.items())),
                space,
            )

    async def _check_clear_embeddings(self) -> None:
        """Warn about embeddings stored in the clear while a data key is set."""
        from facesvc.repositories.faces import FaceRepository

        if self.cipher.active_key_id is None:
            return
        async with session_scope(self.sessionmaker) as session:
            clear = (await FaceRepository(session, self.cipher).key_id_counts()).get(None, 0)
        if clear:
            log.warning(
                "%d stored embeddings are not encrypted (written in dev mode or before "
                "migration 0003): run `facesvc keys rotate-data` to encrypt them",
                clear,
            )

    def _add_model_policies(self) -> None:
        """The policies that need the loaded embedder's threshold and calibration. An
        embedder with neither (before `facesvc eval calibrate`) still detects and embeds;
        its recognition requests fail (``recognition_policy``). A calibration file that is
        missing or malformed fails start-up, as below."""
        try:
            self.policies = self.policies.with_models(self.settings, self.registry)
        except ModelFileError as exc:
            log.warning("verification, identification and liveness are unavailable: %s", exc)

    async def load_models(self) -> None:
        try:
            # a gallery that can load without the model (the embedded one) loads meanwhile
            prepare = getattr(self.gallery, "prepare", None)
            preparing = asyncio.create_task(prepare(), name="gallery") if prepare else None
            try:
                await self.registry.start()
                self._add_model_policies()
            finally:
                if preparing is not None:
                    await preparing
            calibration = self.registry.calibration  # a missing or bad file fails start-up
            log.info("score calibration: %s", calibration.space if calibration else "none")
            await self._check_embedding_space()
            stats = await self.gallery.start(self.registry.embedding_dim)
            log.info("%s", stats.describe())
            # What is loaded by now lives as long as the worker: out of the collector's sight,
            # so a full collection under load scans only what requests made (not every model's
            # and library's objects: those pauses took 0.1-0.2 s of a worker at 16 verifies)
            gc.collect()
            gc.freeze()
            # a scan of the faces table (a second at 1e6 faces) for a warning: after ready
            self._checks = asyncio.create_task(self._check_clear_embeddings(), name="checks")
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


def data_cipher(settings: Settings) -> EmbeddingCipher:
    """The cipher for embeddings at rest; refuses to run without a key outside dev mode."""
    from facesvc.security.crypto import EncryptionKeyError

    if settings.encryption_key is None:
        if not settings.dev_mode:
            raise ConfigurationError(
                "FACESVC_ENCRYPTION_KEY is not set: faces are biometric data and are stored "
                "encrypted. Generate one with `facesvc keys gen-data-key`, or set "
                "FACESVC_DEV_MODE=true to store them in the clear on a development machine."
            )
        log.warning("dev mode: embeddings are stored WITHOUT encryption")
        return EmbeddingCipher(None)
    try:
        return EmbeddingCipher.from_setting(settings.encryption_key.get_secret_value())
    except EncryptionKeyError as exc:
        raise ConfigurationError(f"FACESVC_ENCRYPTION_KEY: {exc}") from exc


def small_writes(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> Writer:
    """Group commit with a turn between the workers on a SQLite file; a transaction per write
    on PostgreSQL (and on SQLite with FACESVC_SQLITE_GROUP_COMMIT=false)."""
    from facesvc.db.engine import SQLITE_BUSY_TIMEOUT_MS, is_sqlite, sqlite_file
    from facesvc.db.group_writer import GroupWriter
    from facesvc.db.turn import ProcessTurn

    if not is_sqlite(settings.database_url) or not settings.sqlite_group_commit:
        return DirectWriter(sessionmaker)
    file = sqlite_file(settings.database_url)
    turn = ProcessTurn(file, SQLITE_BUSY_TIMEOUT_MS / 1000) if file is not None else None
    return GroupWriter(sessionmaker, turn=turn)


def build_state(settings: Settings) -> AppState:
    """Everything the service runs on (models not loaded yet: ``await load_models()``).

    Used by the app's lifespan and by CLI commands that work in-process (``enrol``)."""
    cipher = data_cipher(settings)
    policies = Policies.from_settings(settings)  # refuses unknown liveness challenges
    from facesvc.db.engine import create_engine, create_sessionmaker
    from facesvc.gallery.ann import ANNIndex, HNSWIndex, IVFIndex
    from facesvc.gallery.index import GalleryIndex
    from facesvc.gallery.sync import GallerySync

    engine = create_engine(
        settings.database_url,
        workers=max(1, settings.workers),
        writer_turns=settings.sqlite_writer_turns,
        one_hop=settings.sqlite_one_hop,
    )
    registry = ModelRegistry(settings)
    pipeline = FacePipeline(registry, policies.pipeline)
    sessionmaker = create_sessionmaker(engine)
    writer = small_writes(settings, sessionmaker)
    gallery: Gallery
    if settings.gallery_backend == "embedded":
        from sqlalchemy.engine import make_url

        from facesvc.db.engine import is_sqlite
        from facesvc.gallery.lean import LeanGallery
        from facesvc.gallery.lean_index import LeanIndex
        from facesvc.gallery.sealed import cache_folder

        url = make_url(settings.database_url)
        sqlite_path = (
            url.database if is_sqlite(url) and url.database not in (None, "", ":memory:") else None
        )
        gallery = LeanGallery(
            LeanIndex(
                registry.embedder_spec.embedding_space,
                ann_min_size=settings.gallery_ann_min_size,
                nprobe=settings.gallery_ivf_nprobe,
            ),
            cipher,
            sessionmaker,
            sqlite_path=sqlite_path,
            # an in-memory database is private to its process: nothing to share
            shared_dir=settings.gallery_shared_dir if sqlite_path or not is_sqlite(url) else None,
            cache_dir=cache_folder(settings.gallery_cache_dir, sqlite_path)
            if sqlite_path
            else None,
            database=None if sqlite_path else url.render_as_string(hide_password=True),
        )
    elif settings.gallery_backend == "pgvector":
        from facesvc.gallery.pgvector import PgVectorGallery

        gallery = PgVectorGallery(
            cipher,
            sessionmaker,
            settings.database_url,
            registry.embedder_spec.embedding_space,
            ef_search=settings.gallery_pgvector_ef_search,
        )
    else:
        ann: ANNIndex | None = None
        if settings.gallery_backend == "hnsw":
            ann = HNSWIndex(128)  # the embedder's size once loaded (GalleryIndex.use_dimension)
        elif settings.gallery_backend == "ivf":
            ann = IVFIndex(128, nprobe=settings.gallery_ivf_nprobe)
        index = GalleryIndex(
            registry.embedder_spec.embedding_space,
            ann=ann,
            ann_min_size=settings.gallery_ann_min_size,
        )
        gallery = GallerySync(index, cipher, sessionmaker, settings.gallery_backend)
    return AppState(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        registry=registry,
        pipeline=pipeline,
        analysis=FaceAnalysisService(pipeline),
        gallery=gallery,
        cipher=cipher,
        writer=writer,
        policies=policies,
        callers=CallerCache(KeyChangeStamp.for_database(settings.database_url)),
    )
