"""What produced an evaluation's figures (models, the settings that matter, machine, command,
date), and paths as reports name them."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

from facesvc.inference.pipeline import FacePipeline
from facesvc.inference.runtimes import cpu_model, speed_flags
from facesvc.settings import PROJECT_ROOT


def describe(pipeline: FacePipeline, command: str) -> dict[str, Any]:
    """``command``, ``date``, ``models`` and ``machine`` of a report made by ``command``."""
    registry = pipeline.registry
    settings = registry.settings
    return {
        "command": command,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "models": {
            "detector": registry.detector_spec.name,
            "detector_version": registry.detector_spec.version,
            "mesh": registry.mesh_spec.name,
            "embedder": registry.embedder_spec.name,
            "embedder_version": registry.embedder_spec.version,
            "crop": {
                "square": registry.crop_policy.square,
                "scale": registry.crop_policy.scale,
            },
            "device": settings.device,
            "detection_min_score": settings.detection_min_score,
            "detection_max_side": settings.detection_max_side,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "tensorflow": importlib.metadata.version("tensorflow"),
            "facesvc": importlib.metadata.version("facesvc"),
        },
    }


def cpu_description() -> dict[str, Any]:
    """The CPU's model, the flags that decide model speed, the usable cores and the load."""
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": speed_flags(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def display_path(path: Path) -> str:
    """``path`` relative to the project when inside it (reports stay machine-independent)."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)
