"""One settings class for the whole service (env prefix ``FACESVC_``).

Every field is listed with its default and meaning in ``.env.example``, in the same sections
and order; in the class every field comes before the validators and properties.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The dotenv file settings are read from: `.env` in the working directory unless this
# variable names another one; set to the empty string, no file is read (the test harness
# does this, so a developer's `.env` from `make run` never reaches a test or its servers).
ENV_FILE_VARIABLE = "FACESVC_ENV_FILE"
DEFAULT_ENV_FILE = ".env"

_DEVICE_RE = re.compile(r"^(cpu|gpu)(:\d+)?$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FACESVC_",
        env_file=DEFAULT_ENV_FILE,
        env_file_encoding="utf-8",
        env_ignore_empty=True,  # FACESVC_X= (empty) means "use the default"
        extra="ignore",
    )

    # --- where things are ---------------------------------------------------------------------
    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{PROJECT_ROOT / 'var' / 'facesvc.db'}",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    models_dir: Path = Field(default=PROJECT_ROOT / "models", description="Pulled model files")
    model_manifest: Path | None = Field(
        default=None,
        description="Manifest of model specs; defaults to <models_dir>/manifest.json",
    )
    data_dir: Path = Field(
        default=PROJECT_ROOT.parent / "shared" / "data", description="Evaluation data (LFW ...)"
    )

    # --- the server: processes, threads and devices -------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    workers: int = Field(
        default=0,
        ge=0,
        description="Worker processes of `facesvc serve` (0: one per CPU core this process "
        "may use, affinity and container quota included, at most 8; one with a GPU device)",
    )
    inference_threads: int = Field(
        default=0,
        ge=0,
        description="Threads per model in each worker (TFLite interpreters, TensorFlow's "
        "intra-op pool); 0: the cores shared out among the workers, at least one",
    )
    balance_connections: bool = Field(
        default=True,
        description="With several workers, give each new connection to the worker holding the "
        "fewest open ones (on asyncio's event loop) instead of uvicorn's first-come accept "
        "(on uvloop), which can leave most keep-alive connections on one worker",
    )
    startup_wait_for_models: bool = Field(
        default=False,
        description="Accept connections only once the models are loaded (set by `serve "
        "--workers N`: workers share one socket, so a loading worker must not take requests)",
    )
    device: str = Field(
        default="cpu",
        description="cpu, gpu (worker i of --workers N takes GPU i mod GPUs) or gpu:N (pinned); "
        "cpu:N with FACESVC_CPU_LOGICAL_DEVICES",
    )
    cpu_logical_devices: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Split the CPU into this many TensorFlow logical devices (/CPU:0 ...), "
        "which FACESVC_DEVICE=cpu spreads workers over like GPUs: tests the device pinning "
        "without a GPU",
    )

    # --- models -------------------------------------------------------------------------------
    detector: str = Field(default="blazeface", description="Manifest name of the face detector")
    embedder: str = Field(
        default="facenet-int8",
        description="Manifest name of the embedding model (facenet-int8: TFLite with int8 "
        "weights, the default: LFW accuracy as fp32, 4x smaller, 130 MiB less memory; "
        "facenet-tflite: fp32; facenet: the TF graph, for GPUs)",
    )
    mesh: str = Field(default="facemesh", description="Manifest name of the 468-point mesh model")
    attributes: bool = Field(
        default=True,
        description="Load the age, gender and expression models (manifest entries age, gender, "
        "expression) at start-up, for /v1/detect?attributes=...; false: only pose (from the "
        "mesh) is available, and each worker takes about 75 MiB less memory",
    )
    antispoof_model: str | None = Field(
        default=None,
        description="Manifest name of a passive presentation-attack model you bring (task "
        "antispoof; input contract in facesvc/inference/antispoof.py, e.g. MiniFASNet); off "
        "when unset: none ships in a PyPI package",
    )
    cpu_runtime: Literal["auto", "tflite", "openvino"] = Field(
        default="auto",
        description="auto: at start-up, load the default detector/embedder's OpenVINO variant "
        "instead only on CPU families (amx, avx512_vnni, avx2) where the manifest says it "
        "measured faster at LFW accuracy "
        "within 0.1 point (bench/cpu_runtimes.py; a model other than the default is loaded "
        "as named); tflite: load exactly the named models; openvino: every model's OpenVINO "
        "variant where one exists",
    )

    # --- model calls: batching and queueing ---------------------------------------------------
    batch_max_size: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Most faces (or images) merged into one model call (8: on a CPU, larger "
        "batches gave no more throughput and a longer tail; raise it on a GPU)",
    )
    batch_max_wait_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="How long an idle model waits for more requests to batch (0: run at once; "
        "batches still form while the model is busy)",
    )
    queue_max_items: int = Field(
        default=256, ge=1, description="Items queued per model before requests get 503"
    )

    # --- requests, images and detection -------------------------------------------------------
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_request_bytes: int | None = Field(
        default=None,
        ge=1024,
        description="Largest accepted request body in bytes, refused with 413 before parsing; "
        "default: two uploads (2 x max_upload_bytes, for /v1/compare) + 64 KiB",
    )
    max_image_pixels: int = Field(default=40_000_000, ge=10_000)
    detection_min_score: float = Field(default=0.5, ge=0.0, le=1.0)
    detection_max_side: int = Field(
        default=1024, ge=128, description="Images are downscaled to this longest side to detect"
    )
    detection_pad_below: int = Field(
        default=400,
        ge=0,
        description="When no face is found in a photo at most this many pixels on its longest "
        "side, detect again on it padded to twice its size (0: never)",
    )

    # --- recognition: thresholds, lockout -----------------------------------------------------
    match_threshold: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="Cosine-similarity threshold; default: the embedder's calibrated one",
    )
    verify_far: float = Field(
        default=1e-3,
        gt=0.0,
        le=0.5,
        description="False-match rate of a default verification (and of the legacy "
        "`/face_login`): its threshold is the embedder's calibrated one for this rate (NIST SP "
        "800-63B 5.2.3 asks 1e-3 or better of a biometric authenticator), never below "
        "FACESVC_MATCH_THRESHOLD; `compare` keeps the match threshold",
    )
    identify_far: float = Field(
        default=0.01,
        gt=0.0,
        le=0.5,
        description="Default chance that an unknown person is matched by identify; the 1:N "
        "threshold follows the tenant's gallery size from the embedder's calibration",
    )
    identify_mode: Literal["decide", "review"] = Field(
        default="decide",
        description="identify's default when a request names no `mode`: `decide` (match or "
        "unknown at the calibrated 1:N threshold) or `review` (ranked candidates for a person "
        "to review, no automatic decision: for large galleries, see README)",
    )
    verify_reveal_failed_scores: bool = Field(
        default=False,
        description="Return similarity on failed verifications (off: stops score hill-climbing"
        " and does not tell unknown users from wrong faces)",
    )
    lockout_max_failures: int = Field(
        default=5, ge=1, description="Consecutive failed verifications before a user id locks"
    )
    lockout_base_delay_s: float = Field(
        default=30.0, gt=0, description="First lockout in seconds; doubles with each failure"
    )
    lockout_max_delay_s: float = Field(
        default=3600.0, gt=0, description="Longest lockout in seconds"
    )

    # --- enrolment ----------------------------------------------------------------------------
    enrol_second_face_ratio: float = Field(
        default=0.6,
        gt=0.0,
        le=1.0,
        description="Enrolment refuses a photo whose second-largest face has at least this "
        "fraction of the largest face's area",
    )
    enrol_quality_gate: bool = Field(
        default=True,
        description="Refuse to enrol faces too small, blurred or turned away (thresholds from "
        "`facesvc eval quality`, docs/eval/quality.json)",
    )
    store_face_crops: bool = Field(
        default=False,
        description="Keep an encrypted crop of each enrolled face so `facesvc reembed` can "
        "recompute embeddings after a model change (off: re-enrol from photos instead)",
    )

    # --- liveness -----------------------------------------------------------------------------
    liveness_challenges: str = Field(
        default="turn_left,turn_right,open_mouth",
        description="Challenges a liveness session may ask for (comma-separated, drawn at "
        "random): turn_left, turn_right, open_mouth, and blink (off by default: the face mesh "
        "reads shut eyes only a little lower than open ones, docs/eval/liveness.md)",
    )
    liveness_challenge_count: int = Field(
        default=3, ge=1, le=4, description="Challenges per liveness session, in random order"
    )
    liveness_session_ttl_s: float = Field(
        default=180.0,
        gt=0,
        le=3600,
        description="Seconds a liveness session may take, and within which its pass can log in",
    )
    liveness_max_frames: int = Field(
        default=60, ge=2, le=1000, description="Frames a liveness session may use before it fails"
    )
    liveness_max_frames_per_request: int = Field(
        default=8, ge=1, le=100, description="Frames one POST .../frames may carry (413 beyond)"
    )
    liveness_required: bool = Field(
        default=False,
        description="Every tenant's verify needs a passed liveness session (a tenant can also "
        "require it on its own: PATCH /v1/tenant)",
    )
    liveness_min_similarity: float = Field(
        default=0.45,
        gt=0.0,
        lt=1.0,
        description="Same person across a liveness session's frames: cosine similarity to the "
        "first face at least this, and never below the 1:1 match threshold (frames are seconds "
        "apart; docs/eval/liveness.md)",
    )
    liveness_eyes_closed_below: float | None = Field(
        default=None,
        gt=0,
        description="blink: eye aspect ratio under this is closed (default: measured on LFW, "
        "docs/eval/liveness.json)",
    )
    liveness_eyes_open_above: float | None = Field(
        default=None,
        gt=0,
        description="blink: eye aspect ratio over this is open, seen before the closed eyes "
        "(default: measured)",
    )
    liveness_mouth_open_above: float | None = Field(
        default=None,
        gt=0,
        description="open_mouth: inner-lip gap over mouth width above this is open (default: "
        "measured)",
    )
    liveness_mouth_closed_below: float | None = Field(
        default=None,
        gt=0,
        description="open_mouth: the same ratio under this is closed, seen before the open mouth "
        "(default: measured)",
    )
    liveness_turn_yaw_deg: float | None = Field(
        default=None,
        gt=0,
        description="turn_left/turn_right: head yaw past this many degrees is turned (default: "
        "measured)",
    )
    liveness_frontal_yaw_deg: float | None = Field(
        default=None,
        gt=0,
        description="turn_*: yaw within this many degrees is frontal, seen before the turn "
        "(default: measured)",
    )
    liveness_still_frames: int | None = Field(
        default=None,
        ge=2,
        description="This many frames with a face in which neither eyes, mouth nor yaw moved "
        "fail a session as no-motion: a still photo (default: measured)",
    )
    antispoof_min_live: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="With FACESVC_ANTISPOOF_MODEL: a liveness session whose frames' mean live "
        "probability is under this fails as presentation-attack",
    )

    # --- the gallery: 1:N search --------------------------------------------------------------
    gallery_backend: Literal["embedded", "exact", "ivf", "hnsw", "pgvector"] = Field(
        default="embedded",
        description="1:N search: embedded (one snapshot per machine shared by the workers, IVF "
        "from gallery_ann_min_size faces of a tenant, scores exact), or a copy per worker: "
        "exact matrix product, or FAISS IVF-Flat or HNSW candidates rescored exactly (needs "
        "facesvc[ann]); or pgvector: the vectors stay in PostgreSQL (faces.vector, migration "
        "0007, needs the pgvector extension) and each search is one SQL query, so workers and "
        "replicas keep no gallery",
    )
    gallery_pgvector_ef_search: int = Field(
        default=200,
        ge=10,
        le=1000,
        description="pgvector backend: HNSW candidate list per search (hnsw.ef_search; at "
        "least the candidate pool of 8 per result asked): more is slower and closer to exact",
    )
    gallery_ivf_nprobe: int = Field(
        default=128,
        ge=1,
        description="IVF cells scanned per query (of about 2 sqrt(faces)): more is slower and "
        "closer to exact",
    )
    gallery_ann_min_size: int = Field(
        default=20_000,
        ge=0,
        description="Gallery size (embedded: a tenant's faces) from which IVF/ANN is used",
    )
    gallery_shared_dir: Path | None = Field(
        # a private 0700 folder is made inside it (facesvc.gallery.snapshot_store.private_folder)
        default=Path("/dev/shm"),  # noqa: S108
        description="RAM-backed (tmpfs) directory where the embedded gallery's snapshot is "
        "shared by the workers of a machine (plaintext vectors: never a disk; removed when "
        "the last worker stops); unset or not tmpfs: each worker keeps its own",
    )
    gallery_cache_dir: Path | None = Field(
        default=None,
        description="Folder (made 0700) where the embedded gallery's snapshot is kept on disk "
        "sealed under the active data key (AES-256-GCM), so a restart decrypts one file "
        "instead of every face row; unset: gallery-cache beside the SQLite file. Nothing is "
        "written without a data key (dev mode) or without a RAM-backed shared folder",
    )

    # --- database writes ----------------------------------------------------------------------
    sqlite_group_commit: bool = Field(
        default=True,
        description="SQLite: the writes of verifications, identifications and single "
        "enrolments (attempt counts, lockout resets, audit rows, a face) go through one writer "
        "per worker that commits those of many requests in one transaction, the workers taking "
        "fair turns; off: each request writes in transactions of its own, queueing in SQLite's "
        "busy handler",
    )
    sqlite_one_hop: bool = Field(
        default=True,
        description="SQLite: each statement is one call on the connection's thread (BEGIN "
        "included, no reset after a commit) instead of SQLAlchemy's aiosqlite adapter's four "
        "or five; off: the adapter as shipped",
    )
    sqlite_writer_turns: bool = Field(
        default=False,
        description="Experimental: SQLite writers take turns (a queue per process, a flock "
        "between workers) instead of sleeping in SQLite's busy handler (verify p99 at 8 "
        "concurrent requests 0.3 s instead of 1 s); off: a writer cancelled mid-transaction "
        "can keep its turn until a timeout",
    )

    # --- keys, data at rest and access --------------------------------------------------------
    bootstrap_api_key: SecretStr | None = Field(
        default=None,
        min_length=20,
        description="Stored as the first admin key (tenant 'default') at start-up when no key "
        "exists; at least 20 characters, e.g. from `facesvc keys generate`",
    )
    encryption_key: SecretStr | None = Field(
        default=None,
        description="Data keys for embeddings at rest, id:base64url(32 bytes), comma-separated;"
        " the first encrypts, the rest only decrypt (rotation). `facesvc keys gen-data-key`",
    )
    dev_mode: bool = Field(
        default=False,
        description="Allow starting without FACESVC_ENCRYPTION_KEY (embeddings stored in the "
        "clear). Never in production",
    )
    docs_public: bool = Field(
        default=True, description="/docs, /redoc and /openapi.json without a key"
    )
    metrics_public: bool = Field(
        default=True, description="/metrics without a key (else an admin key is needed)"
    )

    # --- background jobs ----------------------------------------------------------------------
    job_runner_enabled: bool = Field(
        default=True,
        description="Run queued async jobs (/v1/jobs) in this worker; false: it only accepts "
        "them, and another worker runs them",
    )
    job_poll_interval_s: float = Field(
        default=0.2,
        gt=0.0,
        le=60.0,
        description="How often an idle job runner looks for jobs queued by other workers "
        "(a job created in the same worker starts at once)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # FACESVC_ENV_FILE replaces the default file; an explicit Settings(_env_file=...) wins.
        chosen = os.environ.get(ENV_FILE_VARIABLE)
        if (
            chosen is not None
            and isinstance(dotenv_settings, DotEnvSettingsSource)
            and dotenv_settings.env_file == DEFAULT_ENV_FILE
        ):
            dotenv_settings = DotEnvSettingsSource(settings_cls, env_file=chosen or None)
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if not _DEVICE_RE.match(value):
            raise ValueError("device must be 'cpu', 'gpu' or 'gpu:N'")
        return value

    @property
    def manifest_path(self) -> Path:
        return self.model_manifest or self.models_dir / "manifest.json"
