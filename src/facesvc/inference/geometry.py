"""Crops and affine warps shared by the landmark and embedding stages."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facesvc.inference.types import Box


@dataclass(frozen=True, slots=True)
class CropPolicy:
    """How a detector's box becomes the embedder's input.

    ``scale`` enlarges the box around its centre (1.2 = 20% margin in all); ``square`` makes
    the crop square on the longer side before resizing, otherwise the crop is squashed to a
    square like FaceNet's own training crops.
    """

    scale: float = 1.2
    square: bool = True


def crop_matrix(
    center: tuple[float, float], size: tuple[float, float], out_size: int, angle: float = 0.0
) -> np.ndarray:
    """2x3 matrix mapping output-crop pixels to image pixels.

    The crop covers ``size`` (w, h) image pixels around ``center`` rotated by ``angle``
    radians, sampled into an ``out_size`` square.
    """
    sx, sy = size[0] / out_size, size[1] / out_size
    cos, sin = np.cos(angle), np.sin(angle)
    a = np.array([[cos * sx, -sin * sy], [sin * sx, cos * sy]], dtype=np.float64)
    # pixel-centre convention (as cv2.resize): crop pixel u covers [u, u+1), its centre u+0.5
    half = out_size / 2.0 - 0.5
    t = np.array(center, dtype=np.float64) - 0.5 - a @ np.array([half, half])
    return np.hstack([a, t[:, None]])


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """2x3 matrix of the rotation, uniform scale and translation that maps ``source`` points
    closest to ``target`` in least squares (Umeyama 1991; no reflection)."""
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    variance = float((src_c**2).sum() / len(src))
    scale = float((s * sign).sum() / variance) if variance > 0 else 1.0
    linear = scale * rotation
    return np.hstack([linear, (dst_mean - linear @ src_mean)[:, None]])


def warp_crop(image: np.ndarray, matrix: np.ndarray, out_size: int) -> np.ndarray:
    """Sample the crop described by ``matrix`` (crop -> image); outside pixels are black."""
    crop: np.ndarray = cv2.warpAffine(
        image,
        matrix,
        (out_size, out_size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return crop


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 2x3 affine matrix."""
    pts = np.asarray(points, dtype=np.float64)
    mapped: np.ndarray = pts @ matrix[:, :2].T + matrix[:, 2]
    return mapped


def face_crop(image: np.ndarray, box: Box, policy: CropPolicy, out_size: int) -> np.ndarray:
    """The embedder's input crop for one face (uint8, out_size x out_size x 3)."""
    if policy.square:
        side = max(box.width, box.height) * policy.scale
        size = (side, side)
    else:
        size = (box.width * policy.scale, box.height * policy.scale)
    matrix = crop_matrix(box.center, size, out_size)
    return warp_crop(image, matrix, out_size)


def resize_longest(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale so the longest side is at most ``max_side``; returns (image, scale applied)."""
    height, width = image.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return image, 1.0
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale
