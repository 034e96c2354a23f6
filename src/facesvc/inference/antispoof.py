"""The slot for a passive presentation-attack (anti-spoofing) model that an operator brings.

No such model ships in a PyPI package (``../shared/MODELS.md``: the ones on PyPI download
weights at run time or call printed and screen attacks live), so the manifest has no entry for
one and it is off by default. An operator who has one adds a manifest entry with
``task: "antispoof"`` and points ``FACESVC_ANTISPOOF_MODEL`` at it; liveness sessions then score
every frame and fail as ``presentation-attack`` when the mean live probability of a session's
frames is under ``FACESVC_ANTISPOOF_MIN_LIVE``.

The input contract is MiniFASNet's (minivision-ai/Silent-Face-Anti-Spoofing, what deepface
uses), set per entry in ``options`` with these defaults:

- ``crop_scale`` 2.7: a box 2.7 times the face box around its centre, shrunk when the photo is
  too small for it and shifted to stay inside the photo (never padded);
- ``input_size`` 80: that box resized to 80x80;
- ``channel_order`` "bgr", ``pixel_scale`` 1.0: BGR pixels 0-255 as float32, not divided by
  255; NCHW;
- ``output`` "logits" (a softmax is applied) or "probabilities"; ``live_index`` 1: the classes
  are [print, live, replay].

The file is ONNX (run by ONNX Runtime) and must carry its ``sha256`` in the entry (checked at
load, like any model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facesvc.inference.runtimes.onnx import OnnxModel
from facesvc.inference.types import Box


@dataclass(frozen=True, slots=True)
class AntispoofContract:
    crop_scale: float = 2.7
    input_size: int = 80
    channel_order: str = "bgr"
    pixel_scale: float = 1.0
    output: str = "logits"
    live_index: int = 1

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> AntispoofContract:
        known = {k: options[k] for k in cls.__dataclass_fields__ if k in options}
        contract = cls(**known)
        if contract.channel_order not in ("bgr", "rgb"):
            raise ValueError(f"channel_order must be bgr or rgb, not {contract.channel_order!r}")
        if contract.output not in ("logits", "probabilities"):
            raise ValueError(f"output must be logits or probabilities, not {contract.output!r}")
        return contract


def antispoof_crop(image: np.ndarray, box: Box, contract: AntispoofContract) -> np.ndarray:
    """The model's input crop of one face from an RGB photo: (size, size, 3) uint8 in the
    contract's channel order (MiniFASNet's ``CropImage._get_new_box`` geometry)."""
    height, width = image.shape[:2]
    scale = min((height - 1) / max(box.height, 1e-6), (width - 1) / max(box.width, 1e-6))
    scale = min(scale, contract.crop_scale)
    new_w, new_h = box.width * scale, box.height * scale
    cx, cy = box.center
    left, top = cx - new_w / 2, cy - new_h / 2
    right, bottom = cx + new_w / 2, cy + new_h / 2
    if left < 0:
        right, left = right - left, 0.0
    if top < 0:
        bottom, top = bottom - top, 0.0
    if right > width - 1:
        left, right = left - (right - width + 1), float(width - 1)
    if bottom > height - 1:
        top, bottom = top - (bottom - height + 1), float(height - 1)
    x0, y0, x1, y1 = int(left), int(top), int(right), int(bottom)
    crop = image[y0 : y1 + 1, x0 : x1 + 1]
    size = contract.input_size
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
    if contract.channel_order == "bgr":
        crop = crop[:, :, ::-1]
    return np.ascontiguousarray(crop)


class AntispoofModel:
    """Crops in (N, size, size, 3) uint8 -> live probability per crop (N,)."""

    def __init__(self, path: Path, contract: AntispoofContract, threads: int = 1) -> None:
        self.contract = contract
        self.model = OnnxModel(path, threads=threads)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        tensor = crops.astype(np.float32).transpose(0, 3, 1, 2) * self.contract.pixel_scale
        out = np.asarray(self.model(tensor), dtype=np.float64).reshape(len(crops), -1)
        if self.contract.output == "logits":
            out = np.exp(out - out.max(axis=1, keepdims=True))
            out /= out.sum(axis=1, keepdims=True)
        return out[:, self.contract.live_index].astype(np.float32)
