"""The evaluation data the tests read (LFW, the dlib faces) and the upload form they send it in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facesvc.settings import Settings

# FACESVC_DATA_DIR, else the setting's default: tests/conftest.py keeps any `.env` file out.
DATA_DIR = Path(os.environ.get("FACESVC_DATA_DIR", Settings.model_fields["data_dir"].default))
LFW = DATA_DIR / "lfw" / "lfw-deepfunneled"
DLIB = DATA_DIR / "dlib_faces"


def lfw_image(name: str, number: int) -> bytes:
    return (LFW / name / f"{name}_{number:04d}.jpg").read_bytes()


def require_data() -> None:
    if not LFW.is_dir() or not DLIB.is_dir():
        message = f"evaluation data not found under {DATA_DIR} (set FACESVC_DATA_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def image_file(
    data: bytes, name: str = "face.jpg", mime: str = "image/jpeg"
) -> dict[str, tuple[str, bytes, str]]:
    return {"image": (name, data, mime)}
