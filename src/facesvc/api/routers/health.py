"""Liveness, readiness and the problem-type documentation."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from facesvc import __version__
from facesvc.api.deps import StateDep
from facesvc.api.problems import problem_responses
from facesvc.api.schemas import (
    LiveResponse,
    ModelStatus,
    ProblemType,
    ReadyResponse,
    WorkerStatus,
)
from facesvc.db.engine import ping
from facesvc.errors import NotReadyError, PathNotFoundError, problem_type
from facesvc.inference.devices import worker_index, worker_plan

router = APIRouter(tags=["health"])


@router.get("/livez", operation_id="livez", summary="The process is up")
async def livez() -> LiveResponse:
    return LiveResponse(status="ok", version=__version__)


@router.get(
    "/readyz",
    operation_id="readyz",
    summary="Models loaded and the database reachable",
    responses=problem_responses(503),
)
async def readyz(state: StateDep) -> ReadyResponse:
    models = [ModelStatus(**vars(m)) for m in state.registry.info()]
    # models_error: a start-up step after the models failed too (e.g. the gallery's check)
    if state.models_error or not state.registry.ready:
        detail = state.models_error or "models are still loading"
        raise NotReadyError(
            detail, headers={"Retry-After": "5"}, models=[m.model_dump() for m in models]
        )
    if not await ping(state.engine):
        raise NotReadyError("the database is not reachable")
    return ReadyResponse(
        status="ready",
        database="ok",
        models=models,
        faces_needing_reembed=sum(state.stale_faces.values()),
        gallery_backend=state.gallery.name,
        gallery_faces=state.gallery.size(),
        worker=_worker_status(state.settings.workers, state.settings.inference_threads),
    )


def _worker_status(workers: int, threads: int) -> WorkerStatus:
    plan = worker_plan(workers, threads)
    return WorkerStatus(
        pid=os.getpid(),
        index=worker_index(),
        workers=plan.workers,
        threads_per_model=plan.threads,
        cores=plan.cores,
    )


@router.get(
    "/problems/{slug}",
    operation_id="describe_problem",
    summary="What a problem type means",
    response_model=ProblemType,
    responses=problem_responses(404, 422),
)
async def describe_problem(
    slug: Annotated[
        str, Path(description="The last segment of a problem's `type`", examples=["no-face"])
    ],
    request: Request,
) -> JSONResponse:
    problem = problem_type(slug)
    if problem is None:
        raise PathNotFoundError(f"no problem type {slug!r}")
    return JSONResponse(
        {"type": f"/problems/{slug}", "title": problem.title, "description": problem.description}
    )
