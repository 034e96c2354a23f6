"""Decoding uploaded image bytes safely: type by magic bytes, size from the header first."""

from __future__ import annotations

import struct

import cv2
import numpy as np

SUPPORTED_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp")


class ImageError(ValueError):
    """Base class for every problem with an uploaded image."""


class EmptyImageError(ImageError):
    pass


class UnsupportedImageTypeError(ImageError):
    pass


class CorruptImageError(ImageError):
    pass


class ImageTooLargeError(ImageError):
    def __init__(self, width: int, height: int, max_pixels: int) -> None:
        super().__init__(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
        self.width, self.height, self.max_pixels = width, height, max_pixels


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


def header_size(data: bytes, mime: str) -> tuple[int, int] | None:
    """(width, height) read from the header without decoding pixels; None if not found."""
    try:
        if mime == "image/png" and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return int(width), int(height)
        if mime == "image/bmp":
            width, height = struct.unpack("<ii", data[18:26])
            return abs(int(width)), abs(int(height))
        if mime == "image/webp":
            return _webp_size(data)
        if mime == "image/jpeg":
            return _jpeg_size(data)
    except struct.error:
        return None
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


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode JPEG/PNG/WebP/BMP bytes to an RGB uint8 array (H, W, 3), EXIF orientation applied.

    The pixel count is checked from the header before any pixel is allocated, so a
    decompression bomb costs microseconds, not gigabytes.
    """
    if not data:
        raise EmptyImageError("the uploaded file is empty")
    mime = sniff_type(data)
    if mime is None:
        raise UnsupportedImageTypeError(
            "not a supported image: send JPEG, PNG, WebP or BMP (checked by content, "
            "not by file name)"
        )
    size = header_size(data, mime)
    if size is None:
        raise CorruptImageError(f"the {mime} header is missing or damaged")
    width, height = size
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"the {mime} header gives an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLargeError(width, height, max_pixels)
    buffer = np.frombuffer(data, dtype=np.uint8)
    # IMREAD_COLOR turns grey, 16-bit and alpha images into 8-bit BGR and applies EXIF rotation.
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None or bgr.ndim != 3 or bgr.shape[0] == 0 or bgr.shape[1] == 0:
        raise CorruptImageError(f"the {mime} data could not be decoded (truncated or damaged)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_jpeg(image_rgb: np.ndarray, quality: int = 92) -> bytes:
    ok, buffer = cv2.imencode(
        ".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buffer.tobytes())
