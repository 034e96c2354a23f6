"""Decoding uploaded image bytes safely: type by magic bytes, size from the header first.

Every check before ``cv2.imdecode`` reads a few header bytes, so a hostile file (a
decompression bomb, an animation, a JPEG of thousands of scans) is refused in microseconds,
before any pixel is allocated. OpenCV's own pixel limit (``OPENCV_IO_MAX_IMAGE_PIXELS``,
set in ``facesvc/__init__.py`` before cv2 loads) is a second line behind the header check.
"""

from __future__ import annotations

import os
import struct

import cv2
import numpy as np

from facesvc.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageTooLargeError,
    UnsupportedImageTypeError,
)

SUPPORTED_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp")

# A progressive JPEG has ~10 scans; each scan is a pass over every coefficient, so a small
# file of thousands of scans costs minutes of CPU. Real encoders stay far below this.
MAX_JPEG_SCANS = 100
_MAX_PNG_CHUNKS = 256
# OpenCV's default when OPENCV_IO_MAX_IMAGE_PIXELS is unset.
OPENCV_DEFAULT_MAX_PIXELS = 1 << 30

# Known formats we do not decode, named in the 415's detail.
_UNSUPPORTED_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"%PDF", "PDF"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
)


def sniff_type(data: bytes) -> str | None:
    """The MIME type from the file's magic bytes, or None when it is not a supported image."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:2] == b"BM":
        return "image/bmp"
    return None


def unsupported_format(data: bytes) -> str | None:
    """The name of a known image or document format that is not accepted, if it is one."""
    for offset, signature, name in _UNSUPPORTED_SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return name
    return None


def header_size(data: bytes, mime: str) -> tuple[int, int] | None:
    """(width, height) read from the header without decoding pixels; None if not found."""
    try:
        if mime == "image/png" and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return int(width), int(height)
        if mime == "image/bmp":
            return _bmp_size(data)
        if mime == "image/webp":
            return _webp_size(data)
        if mime == "image/jpeg":
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", data[18:22])
        return int(width), int(height)
    if header >= 40:  # BITMAPINFOHEADER and later; a negative height means top-down rows
        width, height = struct.unpack("<ii", data[18:26])
        return abs(int(width)), abs(int(height))
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            pos += 1
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        pos += 2 + length
    return None


def _png_chunks_before_data(data: bytes) -> set[bytes]:
    """The types of the PNG chunks before the first IDAT (where acTL and tRNS must be).

    Bounded: real files have a few dozen chunks there; a file of empty chunks is not read on.
    """
    seen: set[bytes] = set()
    pos, end = 8, len(data)
    for _ in range(_MAX_PNG_CHUNKS):
        if pos + 8 > end:
            break
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            break
        seen.add(kind)
        pos += 12 + length  # length, type, data, CRC
    return seen


def _check_still_image(data: bytes, mime: str, png_chunks: set[bytes]) -> None:
    """Refuse animations and JPEGs that are cheap to send but costly to decode."""
    if b"acTL" in png_chunks:
        raise UnsupportedImageTypeError(
            "animated PNG is not supported: send a still photo (JPEG, PNG, WebP or BMP)"
        )
    if mime == "image/webp" and data[12:16] == b"VP8X" and data[20:21] and data[20] & 0x02:
        raise UnsupportedImageTypeError(
            "animated WebP is not supported: send a still photo (JPEG, PNG, WebP or BMP)"
        )
    if mime == "image/jpeg":
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS:
            raise CorruptImageError(f"the JPEG has {scans} scans; at most {MAX_JPEG_SCANS}")
        # The last scan's data must be followed by the end-of-image marker. (An EXIF
        # thumbnail has its own markers, but before the main image's.)
        if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
            raise CorruptImageError("the JPEG is truncated: its end-of-image marker is missing")


def _has_alpha(data: bytes, mime: str, png_chunks: set[bytes]) -> bool:
    if mime == "image/png":
        colour_type = data[25] if len(data) > 25 else 0
        return colour_type in (4, 6) or b"tRNS" in png_chunks
    if mime == "image/webp":
        chunk = data[12:16]
        if chunk == b"VP8X":
            return len(data) > 20 and bool(data[20] & 0x10)
        if chunk == b"VP8L" and len(data) >= 25:
            return bool((int.from_bytes(data[21:25], "little") >> 28) & 1)
    return False


def opencv_max_pixels() -> int:
    """The pixel limit cv2 enforces: OPENCV_IO_MAX_IMAGE_PIXELS as cv2 read it when loaded."""
    try:
        return int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", OPENCV_DEFAULT_MAX_PIXELS))
    except ValueError:
        return OPENCV_DEFAULT_MAX_PIXELS


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode JPEG/PNG/WebP/BMP bytes to an RGB uint8 array (H, W, 3), EXIF orientation applied.

    The pixel count is checked from the header before any pixel is allocated, so a
    decompression bomb costs microseconds, not gigabytes. Grey, 16-bit and CMYK images
    become 8-bit RGB; transparent pixels become white.
    """
    if not data:
        raise EmptyImageError("the uploaded file is empty")
    mime = sniff_type(data)
    if mime is None:
        known = unsupported_format(data)
        what = f"{known} is not supported" if known else "not a supported image"
        raise UnsupportedImageTypeError(
            f"{what}: send JPEG, PNG, WebP or BMP (checked by content, not by file name)"
        )
    size = header_size(data, mime)
    if size is None:
        raise CorruptImageError(f"the {mime} header is missing or damaged")
    width, height = size
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"the {mime} header gives an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLargeError(width, height, max_pixels)
    png_chunks = _png_chunks_before_data(data) if mime == "image/png" else set()
    _check_still_image(data, mime, png_chunks)
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        if _has_alpha(data, mime, png_chunks):
            image = _decode_over_white(buffer)
        else:
            # IMREAD_COLOR turns grey, 16-bit and CMYK images into 8-bit BGR and applies
            # the EXIF orientation, so rotated phone photos come out upright.
            image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error:  # OpenCV 5 raises where 4 returned None (e.g. over its pixel limit)
        image = None
    if image is None or image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        if width * height > opencv_max_pixels():
            raise ImageTooLargeError(width, height, opencv_max_pixels())
        raise CorruptImageError(f"the {mime} data could not be decoded (truncated or damaged)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode_over_white(buffer: np.ndarray) -> np.ndarray | None:
    """Decode an image with transparency and composite it over white: 8-bit BGR."""
    image: np.ndarray | None = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.dtype == np.uint16:
        image = np.right_shift(image, 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        return None
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 3:
        return image
    if image.shape[2] != 4:
        return None
    alpha = image[:, :, 3:4].astype(np.float32) / 255.0
    over_white = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    composited: np.ndarray = np.clip(over_white + 0.5, 0, 255).astype(np.uint8)
    return composited


def encode_jpeg(image_rgb: np.ndarray, quality: int = 92) -> bytes:
    ok, buffer = cv2.imencode(
        ".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buffer.tobytes())
