"""Prometheus metrics, one ``CollectorRegistry`` per app (tests build several apps).

HTTP requests are counted and timed by the request middleware; model calls through each
runner's ``on_call`` hook (on the model's thread: the time of the ``predict`` call itself,
and the items it held after micro-batching); models-ready, queue depth and gallery size are
read when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from fastapi import FastAPI
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from facesvc.inference.registry import ModelRegistry

HTTP_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MODEL_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """The service's metrics and the registry they are exposed from."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("method", "route", "status")
        self.http_requests = Counter(
            "facesvc_http_requests",
            "HTTP requests by method, route template and status",
            labels,
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "facesvc_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response body",
            labels,
            buckets=HTTP_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.model_seconds = Histogram(
            "facesvc_model_inference_seconds",
            "Time of one model call on the model's thread (queue wait excluded)",
            ("model",),
            buckets=MODEL_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.model_cpu_seconds = Counter(
            "facesvc_model_cpu_seconds",
            "CPU time of the model calls on each model's thread (time.thread_time): the "
            "model's share of the process's CPU (process_cpu_seconds_total)",
            ("model",),
            registry=self.registry,
        )
        self.model_items = Counter(
            "facesvc_model_items",
            "Items (images or faces) the model has processed",
            ("model",),
            registry=self.registry,
        )
        self.model_batch_size = Histogram(
            "facesvc_model_batch_size",
            "Items (images or faces) in one model call, after micro-batching",
            ("model",),
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self._models: ModelRegistry | None = None
        self._gallery_size: Callable[[], int | None] | None = None
        self.registry.register(_ScrapeTimeCollector(self))
        # process_cpu_seconds_total, memory, open files: this worker's, beside its models'
        ProcessCollector(registry=self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.http_requests.labels(*labels).inc()
        self.http_seconds.labels(*labels).observe(seconds)

    def observe_model_call(self, model: str, items: int, seconds: float, cpu: float) -> None:
        """The runners' ``on_call`` hook: runs on a model thread (prometheus_client locks)."""
        self.model_seconds.labels(model).observe(seconds)
        self.model_cpu_seconds.labels(model).inc(cpu)
        self.model_items.labels(model).inc(items)
        self.model_batch_size.labels(model).observe(items)

    def observe_models(self, models: ModelRegistry) -> None:
        """Time every runner's calls, and report readiness and queue depth at scrape time."""
        self._models = models
        for runner in models.runners:
            runner.on_call = self.observe_model_call

    def set_gallery_size_provider(self, provider: Callable[[], int | None] | None) -> None:
        """``provider()`` is called at each scrape for ``facesvc_gallery_size`` (None: this
        worker holds no gallery copy, e.g. pgvector: no gauge)."""
        self._gallery_size = provider

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ScrapeTimeCollector(Collector):
    """Values that are read, not counted: models ready, queued items, gallery size."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        models = self._metrics._models
        yield GaugeMetricFamily(
            "facesvc_models_ready",
            "1 when every model is loaded and warmed, else 0",
            value=1.0 if models is not None and models.ready else 0.0,
        )
        where = GaugeMetricFamily(
            "facesvc_model_info",
            "1 per loaded model, labelled with its task, the device and the runtime it runs on",
            labels=("model", "task", "device", "runtime"),
        )
        for info in models.info() if models is not None else ():
            where.add_metric((info.name, info.task, info.device, info.runtime), 1.0)
        yield where
        queued = GaugeMetricFamily(
            "facesvc_model_queue_items", "Items waiting for each model", labels=("model",)
        )
        for runner in models.runners if models is not None else ():
            queued.add_metric((runner.name,), float(runner.queued_items))
        yield queued
        provider = self._metrics._gallery_size
        size = provider() if provider is not None else None
        if size is not None:
            yield GaugeMetricFamily(
                "facesvc_gallery_size",
                "Faces in the in-memory gallery used for identification",
                value=float(size),
            )


def install_metrics(app: FastAPI) -> ServiceMetrics:
    metrics = ServiceMetrics()
    app.state.metrics = metrics
    return metrics


def metrics_of(app: FastAPI) -> ServiceMetrics:
    metrics: ServiceMetrics = app.state.metrics
    return metrics
