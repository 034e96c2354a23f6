"""The CUHK facial-point set's listing (``cuhk_5pt/testImageList.txt``): one labelled face per
photo, ``path left right top bottom`` then five points (x y each) in ``FIVE_POINT_NAMES`` order.

Read by the landmark evaluation and by ``models pull``, which quantises the int8 OpenVINO
FaceNet on these faces (never on LFW), so it lives here, below both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesvc.inference.types import Box


@dataclass(frozen=True)
class LandmarkSample:
    image: str  # relative to the data folder, with forward slashes
    box: Box
    points: np.ndarray  # (5, 2) in FIVE_POINT_NAMES order


def read_cuhk(path: Path) -> list[LandmarkSample]:
    """Parse ``testImageList.txt`` (Windows paths allowed)."""
    samples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 15:
            raise ValueError(f"{path}: expected 15 fields, got {len(fields)}: {line!r}")
        left, right, top, bottom = (float(v) for v in fields[1:5])
        points = np.array([float(v) for v in fields[5:]], dtype=np.float64).reshape(5, 2)
        samples.append(
            LandmarkSample(
                image=fields[0].replace("\\", "/"),
                box=Box(left, top, right - left, bottom - top),
                points=points,
            )
        )
    return samples
