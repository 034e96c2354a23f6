"""Hostile, broken and unusual images: each gets a clear answer, never a 500.

Bombs are refused from the header in milliseconds without allocating pixels; rotated phone
photos, CMYK, 16-bit, grey and transparent images decode to the right upright RGB picture;
animations and unsupported formats are 415; damaged files are 400.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image, features

from facesvc.errors import CorruptImageError, ImageTooLargeError, UnsupportedImageTypeError
from facesvc.inference.images import MAX_JPEG_SCANS, decode_image, header_size
from tests.security import images as make
from tests.support.api import assert_problem
from tests.support.data import image_file, lfw_image

MAX_PIXELS = 40_000_000
PNG = "image/png"


@pytest.fixture(scope="module")
def face_bgr() -> np.ndarray:
    return make.decode_bgr(lfw_image("Colin_Powell", 1))


@pytest.fixture(scope="module")
def png_bomb() -> bytes:
    return make.png_bomb(20_000)


async def detect(client: httpx.AsyncClient, data: bytes, mime: str = PNG) -> dict[str, Any]:
    response = await client.post("/v1/detect", files=image_file(data, "photo", mime))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_upright_face(body: dict[str, Any]) -> dict[str, Any]:
    assert body["faces"], "no face found"
    face: dict[str, Any] = body["faces"][0]
    marks = face["landmarks"]
    eyes_y = max(marks["left_eye"][1], marks["right_eye"][1])
    assert eyes_y < min(marks["mouth_left"][1], marks["mouth_right"][1]), marks
    assert marks["left_eye"][0] < marks["right_eye"][0], marks
    return face


# --- decompression bombs ---------------------------------------------------------------


def refuse_to_decode(*args: object, **kwargs: object) -> None:
    raise AssertionError("cv2.imdecode was called on a file that should be refused")


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused "from the header" means no decoder ever runs (checked by what is called,
    not by how long it takes, which depends on the machine)."""

    monkeypatch.setattr(cv2, "imdecode", refuse_to_decode)


@pytest.mark.usefixtures("no_pixel_decoding")
def test_png_bomb_is_a_real_png_refused_from_its_header(png_bomb: bytes) -> None:
    assert len(png_bomb) < 1_000_000  # a few hundred KB ...
    assert header_size(png_bomb, PNG) == (20_000, 20_000)  # ... for 400 MB of pixels
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError) as refused:
            decode_image(png_bomb, max_pixels=MAX_PIXELS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (refused.value.width, refused.value.height) == (20_000, 20_000)
    assert peak < 10 * 1024 * 1024, f"allocated {peak} bytes"


@pytest.mark.usefixtures("no_pixel_decoding")
async def test_png_bomb_is_413_over_http(client: httpx.AsyncClient, png_bomb: bytes) -> None:
    response = await client.post("/v1/detect", files=image_file(png_bomb, "bomb.png", PNG))
    body = assert_problem(response, 413, "image-too-large")
    assert "20000x20000" in str(body["detail"])


@pytest.mark.parametrize("kind", ["jpeg", "webp", "bmp"])
def test_other_bombs_are_refused_from_their_headers(
    kind: str, face_bgr: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = {
        "jpeg": lambda: make.with_jpeg_size(make.encode(face_bgr, ".jpg"), 60_000, 60_000),
        "webp": lambda: make.webp_canvas(16_384, 16_384),
        "bmp": lambda: make.bmp_header(50_000, 50_000),
    }[kind]()
    monkeypatch.setattr(cv2, "imdecode", refuse_to_decode)
    with pytest.raises(ImageTooLargeError):
        decode_image(data, max_pixels=MAX_PIXELS)


def test_os2_bmp_header_is_read_with_16_bit_sizes() -> None:
    core = b"BM" + b"\x00" * 12 + (12).to_bytes(4, "little") + (640).to_bytes(2, "little")
    core += (480).to_bytes(2, "little") + (1).to_bytes(2, "little") + (24).to_bytes(2, "little")
    assert header_size(core, "image/bmp") == (640, 480)


def _opencv_limit_probe(env: dict[str, str]) -> list[str]:
    code = (
        "import os\n"
        "import facesvc.inference.images as images\n"
        "import cv2, numpy as np\n"
        "print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'])\n"
        "ok, buf = cv2.imencode('.png', np.zeros((200, 200, 3), np.uint8))\n"
        "try:\n"
        "    print(cv2.imdecode(buf, cv2.IMREAD_COLOR) is None)\n"
        "except cv2.error:\n"  # OpenCV 5 raises, 4 returns None
        "    print(True)\n"
        "try:\n"
        "    images.decode_image(bytes(buf), max_pixels=10**6)\n"
        "    print('decoded')\n"
        "except images.ImageTooLargeError as exc:\n"
        "    print('too-large', exc.max_pixels)\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FACESVC_", "OPENCV_IO"))}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split("\n")[:3]


def test_opencv_pixel_limit_is_set_before_cv2_loads() -> None:
    # Default: the setting's default, 40 MP; a 200 x 200 image decodes.
    assert _opencv_limit_probe({}) == ["40000000", "False", "decoded"]
    # FACESVC_MAX_IMAGE_PIXELS in the environment sets OpenCV's limit too: cv2 refuses the
    # 40,000-pixel image by itself, and decode_image says why (413, not "corrupt").
    assert _opencv_limit_probe({"FACESVC_MAX_IMAGE_PIXELS": "10000"}) == [
        "10000",
        "True",
        "too-large 10000",
    ]
    # An operator's own OPENCV_IO_MAX_IMAGE_PIXELS wins.
    probe = _opencv_limit_probe(
        {"FACESVC_MAX_IMAGE_PIXELS": "10000", "OPENCV_IO_MAX_IMAGE_PIXELS": "1000000"}
    )
    assert probe == ["1000000", "False", "decoded"]


# --- EXIF orientation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "stored_rotation"),
    [(6, cv2.ROTATE_90_COUNTERCLOCKWISE), (8, cv2.ROTATE_90_CLOCKWISE), (3, cv2.ROTATE_180)],
)
async def test_rotated_phone_photo_is_read_upright(
    client: httpx.AsyncClient, face_bgr: np.ndarray, orientation: int, stored_rotation: int
) -> None:
    # A portrait photo (250 x 330) whose sensor stored it rotated, with the EXIF tag that
    # tells viewers how to turn it back, as phones write them.
    upright = cv2.copyMakeBorder(face_bgr, 0, 80, 0, 0, cv2.BORDER_CONSTANT, value=(90, 90, 90))
    reference = assert_upright_face(
        await detect(client, make.encode(upright, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 95))
    )
    stored = make.encode(cv2.rotate(upright, stored_rotation), ".jpg", cv2.IMWRITE_JPEG_QUALITY, 95)

    body = await detect(client, make.with_exif_orientation(stored, orientation), "image/jpeg")

    assert body["image"] == {"width": 250, "height": 330}
    face = assert_upright_face(body)
    for key in ("x", "y", "width", "height"):
        assert abs(face["box"][key] - reference["box"][key]) < 6, (face["box"], reference["box"])
    if orientation != 3:  # without the tag the same pixels are a landscape picture
        plain = await detect(client, stored, "image/jpeg")
        assert plain["image"] == {"width": 330, "height": 250}


# --- colour models, depths, transparency ----------------------------------------------


def test_cmyk_jpeg_decodes_with_the_right_colours() -> None:
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, :32] = (220, 20, 20)  # red | blue
    rgb[:, 32:] = (20, 20, 220)
    cmyk = make.pillow_bytes(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    decoded = decode_image(cmyk, max_pixels=MAX_PIXELS)
    assert decoded.shape == (64, 64, 3)
    assert np.abs(decoded[10, 10].astype(int) - (220, 20, 20)).max() < 25, decoded[10, 10]
    assert np.abs(decoded[10, 50].astype(int) - (20, 20, 220)).max() < 25, decoded[10, 50]


async def test_cmyk_photo_finds_the_face(client: httpx.AsyncClient, face_bgr: np.ndarray) -> None:
    cmyk = make.pillow_bytes(make.rgb_pillow(face_bgr).convert("CMYK"), "JPEG", quality=95)
    assert_upright_face(await detect(client, cmyk, "image/jpeg"))


async def test_sixteen_bit_png_matches_the_eight_bit_photo(
    client: httpx.AsyncClient, face_bgr: np.ndarray
) -> None:
    deep = make.encode(face_bgr.astype(np.uint16) * 257, ".png")
    decoded = decode_image(deep, max_pixels=MAX_PIXELS)
    assert decoded.dtype == np.uint8
    assert np.array_equal(decoded, cv2.cvtColor(face_bgr, cv2.COLOR_BGR2RGB))
    assert_upright_face(await detect(client, deep))


@pytest.mark.parametrize("ext", [".jpg", ".png"])
async def test_greyscale_photo_finds_the_face(
    client: httpx.AsyncClient, face_bgr: np.ndarray, ext: str
) -> None:
    grey = make.encode(cv2.cvtColor(face_bgr, cv2.COLOR_BGR2GRAY), ext)
    decoded = decode_image(grey, max_pixels=MAX_PIXELS)
    assert decoded.shape == (*face_bgr.shape[:2], 3)
    assert np.array_equal(decoded[..., 0], decoded[..., 2])
    assert_upright_face(await detect(client, grey))


@pytest.mark.parametrize("fmt", ["png", "webp"])
async def test_transparent_background_becomes_white(
    client: httpx.AsyncClient, face_bgr: np.ndarray, fmt: str
) -> None:
    # Noise under fully transparent pixels, as cut-out tools leave it: it must not show.
    rng = np.random.default_rng(0)
    bgra = cv2.cvtColor(face_bgr, cv2.COLOR_BGR2BGRA)
    bgra[:, :40, :3] = rng.integers(0, 256, (bgra.shape[0], 40, 3), dtype=np.uint8)
    bgra[:, :40, 3] = 0
    data = make.encode(bgra, f".{fmt}", *((cv2.IMWRITE_WEBP_QUALITY, 101) if fmt == "webp" else ()))
    decoded = decode_image(data, max_pixels=MAX_PIXELS)
    assert (decoded[:, :40] == 255).all()
    assert np.array_equal(decoded[:, 60:], cv2.cvtColor(face_bgr, cv2.COLOR_BGR2RGB)[:, 60:])
    assert_upright_face(await detect(client, data, f"image/{fmt}"))


# --- refused with a clear answer -------------------------------------------------------


def _frames(face_bgr: np.ndarray) -> list[Image.Image]:
    return [make.rgb_pillow(face_bgr), make.rgb_pillow(cv2.flip(face_bgr, 1))]


@pytest.mark.parametrize(
    ("fmt", "word"), [("WEBP", "animated WebP"), ("PNG", "animated PNG"), ("GIF", "GIF")]
)
async def test_animations_and_gif_are_415(
    client: httpx.AsyncClient, face_bgr: np.ndarray, fmt: str, word: str
) -> None:
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow cannot write WebP")
    first, *rest = _frames(face_bgr)
    data = make.pillow_bytes(first, fmt, save_all=True, append_images=rest, duration=100, loop=0)
    with pytest.raises(UnsupportedImageTypeError, match=word):
        decode_image(data, max_pixels=MAX_PIXELS)
    body = assert_problem(
        await client.post("/v1/detect", files=image_file(data, "anim", "image/webp")),
        415,
        "unsupported-image-type",
    )
    assert word in str(body["detail"])


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "GIF"),
        (b"II*\x00\x08\x00\x00\x00", "TIFF"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "AVIF"),
    ],
)
def test_known_unsupported_formats_are_named(data: bytes, name: str) -> None:
    with pytest.raises(UnsupportedImageTypeError, match=f"{name} is not supported"):
        decode_image(data, max_pixels=MAX_PIXELS)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".bmp"])
@pytest.mark.parametrize("keep", [0.5, 0.97])
async def test_truncated_images_are_400(
    client: httpx.AsyncClient, face_bgr: np.ndarray, ext: str, keep: float
) -> None:
    whole = make.encode(face_bgr, ext)
    cut = whole[: int(len(whole) * keep)]
    with pytest.raises(CorruptImageError):
        decode_image(cut, max_pixels=MAX_PIXELS)
    assert_problem(
        await client.post("/v1/detect", files=image_file(cut, f"cut{ext}")), 400, "corrupt-image"
    )


@pytest.mark.parametrize(
    ("data", "slug", "status"),
    [
        (b"", "empty-image", 400),
        (b"\x89PNG\r\n\x1a\n" + make.png_chunk(b"IHDR", b"\x00" * 13), "corrupt-image", 400),
        (make.bmp_header(0, 100), "corrupt-image", 400),
        (b"RIFF\x10\x00\x00\x00WEBPJUNKJUNKJUNK", "corrupt-image", 400),
        (b"\xff\xd8\xff\xd9", "corrupt-image", 400),
    ],
    ids=["zero-bytes", "png-zero-size", "bmp-zero-width", "webp-unknown-chunk", "jpeg-no-frame"],
)
async def test_damaged_headers_are_clear_problems(
    client: httpx.AsyncClient, data: bytes, slug: str, status: int
) -> None:
    assert_problem(await client.post("/v1/detect", files=image_file(data)), status, slug)


def test_random_bytes_behind_each_signature_never_escape_as_other_errors() -> None:
    rng = np.random.default_rng(6)
    signatures = [
        b"\xff\xd8\xff",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
        b"BM",
    ]
    for signature in signatures:
        for size in (4, 40, 400, 4000):
            data = signature + rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            try:
                image = decode_image(data, max_pixels=MAX_PIXELS)
            except (CorruptImageError, ImageTooLargeError, UnsupportedImageTypeError):
                continue
            assert image.ndim == 3
            assert image.shape[2] == 3


def test_jpeg_of_too_many_scans_is_refused_before_decoding(face_bgr: np.ndarray) -> None:
    progressive = make.encode(face_bgr, ".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert decode_image(progressive, max_pixels=MAX_PIXELS).shape == (250, 250, 3)
    # Start-of-scan markers are what a scan-flood JPEG is made of; the count is checked
    # before libjpeg runs.
    flood = make.with_comment(progressive, b"\xff\xda" * (MAX_JPEG_SCANS + 1))
    with pytest.raises(CorruptImageError, match="scans"):
        decode_image(flood, max_pixels=MAX_PIXELS)
