"""Prometheus metrics of this process (left out of the OpenAPI schema)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from facesvc.observability.metrics import metrics_of

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(metrics_of(request.app).exposition(), media_type=CONTENT_TYPE_LATEST)
