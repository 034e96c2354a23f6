"""An embedder the operator brings as ONNX (ArcFace, AdaFace, EdgeFace and the like).

The strongest open face models are in no package registry and mostly under non-commercial
terms (``../shared/MODELS.md``), so none ships here; an operator who licenses one adds a
manifest entry (README, "Bring your own embedder"):

    "my-arcface": {"task": "embedder", "architecture": "arcface", "version": "r100-1",
                   "file": "/models/arcface_r100.onnx", "sha256": "...", "space": "my-arcface",
                   "calibration_file": "calibration/my-arcface.json",
                   "options": {"input_size": 112, "alignment": "arcface-5pt",
                               "channel_order": "rgb", "layout": "nchw",
                               "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5],
                               "output_dim": 512}}

The input contract (``EmbedderContract``, defaults: ArcFace's) says how a face becomes the
model's input: the crop (``arcface-5pt``: the five points warped by a similarity transform
onto ArcFace's 112x112 template, scaled to ``input_size``; ``box``: the detector's box with
the detector's margin, as FaceNet), the channel order, the layout, and
``(pixel - mean) / std`` per channel. ``output_dim`` is checked against what the model gives
at load time, so a wrong file or contract fails at start-up, not in a gallery.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from facesvc.inference.embedders.facenet import l2_normalise
from facesvc.inference.geometry import similarity_transform
from facesvc.inference.runtimes.onnx import OnnxModel

Alignment = Literal["arcface-5pt", "box"]

# ArcFace's five-point template for a 112x112 crop (insightface ``face_align.arcface_dst``),
# in FIVE_POINT_NAMES order: the eye and mouth corner on the image's left first.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True, slots=True)
class EmbedderContract:
    input_size: int = 112
    alignment: Alignment = "arcface-5pt"
    channel_order: Literal["rgb", "bgr"] = "rgb"
    layout: Literal["nchw", "nhwc"] = "nchw"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    output_dim: int | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> EmbedderContract:
        known = {k: options[k] for k in cls.__dataclass_fields__ if k in options}
        for key in ("mean", "std"):
            if key in known:
                values = tuple(float(v) for v in known[key])
                if len(values) != 3:
                    raise ValueError(f"{key} must give one value per channel (3), not {values}")
                known[key] = values
        contract = cls(**known)
        choices = {
            "alignment": ("arcface-5pt", "box"),
            "channel_order": ("rgb", "bgr"),
            "layout": ("nchw", "nhwc"),
        }
        for key, allowed in choices.items():
            if getattr(contract, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, not {getattr(contract, key)!r}")
        if not 16 <= int(contract.input_size) <= 1024:
            raise ValueError(f"input_size must be 16..1024, not {contract.input_size}")
        if any(s <= 0 for s in contract.std):
            raise ValueError(f"std must be positive, not {contract.std}")
        return contract

    @property
    def aligns(self) -> bool:
        """Whether the crop needs the five points (the landmark stage) rather than the box."""
        return self.alignment == "arcface-5pt"


def aligned_crop(image: np.ndarray, five_points: np.ndarray, size: int) -> np.ndarray:
    """The face warped so its five points land on ArcFace's template scaled to ``size``:
    (size, size, 3) uint8, black outside the photo."""
    template = ARCFACE_TEMPLATE_112 * (size / 112.0)
    matrix = similarity_transform(five_points, template)
    crop: np.ndarray = cv2.warpAffine(
        image,
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return crop


class OnnxEmbedder:
    """(N, S, S, 3) uint8 RGB crops -> (N, dim) L2-normalised float32 embeddings, by an ONNX
    graph with one input and one output. A graph exported with a fixed batch of 1 is run one
    crop at a time."""

    def __init__(self, path: Path, contract: EmbedderContract, threads: int = 1) -> None:
        self.contract = contract
        self.model = OnnxModel(path, threads=threads)
        self.input_size = contract.input_size
        batch = self.model.input_shape[0] if self.model.input_shape else None
        self._one_at_a_time = batch == 1
        self._mean = np.asarray(contract.mean, np.float32)
        self._std = np.asarray(contract.std, np.float32)
        size = contract.input_size
        self.dim = int(self.predict(np.zeros((1, size, size, 3), np.uint8)).shape[1])
        if contract.output_dim is not None and self.dim != contract.output_dim:
            raise ValueError(
                f"{path.name} gives {self.dim}-d embeddings, the manifest says "
                f"output_dim {contract.output_dim}"
            )

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        x = crops.astype(np.float32)
        if self.contract.channel_order == "bgr":
            x = x[..., ::-1]
        x = (x - self._mean) / self._std
        if self.contract.layout == "nchw":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        tensor = self.preprocess(crops)
        if self._one_at_a_time and len(tensor) > 1:
            out = np.concatenate([self.model(tensor[i : i + 1]) for i in range(len(tensor))])
        else:
            out = self.model(tensor)
        return l2_normalise(np.asarray(out, np.float32).reshape(len(crops), -1))
