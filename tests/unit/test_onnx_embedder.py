"""The ONNX embedder slot: the five-point alignment, the input contract, the checks at load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facesvc.inference.embedders.onnx import (
    ARCFACE_TEMPLATE_112,
    EmbedderContract,
    OnnxEmbedder,
    aligned_crop,
)
from facesvc.inference.geometry import apply_matrix, similarity_transform
from facesvc.inference.manifest import Manifest, sha256_file
from facesvc.inference.registry import ModelFileError, ModelRegistry, model_factory
from facesvc.settings import Settings
from tests.support.manifests import manifest_with
from tests.support.onnx_graphs import build_embedder


def test_similarity_matrix_recovers_a_rotation_scale_and_shift() -> None:
    angle, scale, shift = np.deg2rad(17.0), 2.5, np.array([40.0, -12.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = np.random.default_rng(3).uniform(0, 200, (5, 2))
    dst = src @ (scale * rotation).T + shift
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-7)
    # a reflection is never fitted: mirrored points give a proper rotation, not a flip
    mirrored = similarity_transform(src * np.array([-1.0, 1.0]), src)
    assert np.linalg.det(mirrored[:, :2]) > 0


def test_aligned_crop_puts_the_five_points_on_the_template() -> None:
    """Draw five dots where a tilted, shifted, scaled face has its points; the crop must show
    them where ArcFace's template says (scaled to the input size)."""
    size = 224
    angle, scale = np.deg2rad(-20.0), 1.8
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = ARCFACE_TEMPLATE_112 @ (scale * rotation).T + np.array([150.0, 90.0])
    image = np.zeros((480, 480, 3), np.uint8)
    for x, y in np.rint(points).astype(int):
        image[y - 2 : y + 3, x - 2 : x + 3] = 255
    crop = aligned_crop(image, points.astype(np.float32), size)
    assert crop.shape == (size, size, 3)
    template = ARCFACE_TEMPLATE_112 * size / 112
    for x, y in template:
        patch = crop[int(y) - 4 : int(y) + 5, int(x) - 4 : int(x) + 5]
        assert patch.max() > 200, (x, y)
    assert crop.mean() < 40  # only the dots: nothing else of the image moved in
    # and the matrix maps the points onto the template
    mapped = apply_matrix(similarity_transform(points, template), points)
    np.testing.assert_allclose(mapped, template, atol=1e-6)


def test_contract_defaults_are_arcface_and_bad_values_are_refused() -> None:
    contract = EmbedderContract.from_options({})
    assert (contract.input_size, contract.alignment, contract.layout) == (
        112,
        "arcface-5pt",
        "nchw",
    )
    assert contract.aligns
    assert not EmbedderContract.from_options({"alignment": "box"}).aligns
    for bad, message in (
        ({"alignment": "dlib"}, "alignment must be"),
        ({"channel_order": "rgba"}, "channel_order must be"),
        ({"layout": "nhcw"}, "layout must be"),
        ({"mean": [127.5]}, "one value per channel"),
        ({"std": [0, 1, 1]}, "std must be positive"),
        ({"input_size": 8}, "input_size must be"),
    ):
        with pytest.raises(ValueError, match=message):
            EmbedderContract.from_options(bad)


def test_the_contract_decides_the_input_tensor(tmp_path: Path) -> None:
    path = tmp_path / "e.onnx"
    build_embedder(path, dim=64)
    crops = np.random.default_rng(1).integers(0, 256, (2, 112, 112, 3)).astype(np.uint8)
    rgb = OnnxEmbedder(path, EmbedderContract(output_dim=64))
    tensor = rgb.preprocess(crops)
    assert tensor.shape == (2, 3, 112, 112)
    np.testing.assert_allclose(tensor[1, 0], (crops[1, :, :, 0] - 127.5) / 127.5, atol=1e-6)
    bgr = OnnxEmbedder(path, EmbedderContract(channel_order="bgr", mean=(0, 0, 0), std=(255,) * 3))
    np.testing.assert_allclose(bgr.preprocess(crops)[0, 0], crops[0, :, :, 2] / 255.0, atol=1e-6)
    vectors = rgb.predict(crops)
    assert vectors.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_graph_exported_with_batch_one_runs_one_crop_at_a_time(tmp_path: Path) -> None:
    dynamic, fixed = tmp_path / "dynamic.onnx", tmp_path / "fixed.onnx"
    build_embedder(dynamic, dim=32)
    build_embedder(fixed, dim=32, batch=1)
    crops = np.random.default_rng(2).integers(0, 256, (3, 112, 112, 3)).astype(np.uint8)
    contract = EmbedderContract(output_dim=32)
    np.testing.assert_allclose(
        OnnxEmbedder(fixed, contract).predict(crops),
        OnnxEmbedder(dynamic, contract).predict(crops),
        atol=1e-6,
    )


def test_a_wrong_output_dim_fails_at_load(tmp_path: Path) -> None:
    path = tmp_path / "e.onnx"
    build_embedder(path, dim=256)
    with pytest.raises(ValueError, match="256-d embeddings, the manifest says output_dim 512"):
        OnnxEmbedder(path, EmbedderContract(output_dim=512))


def manifest_with_mine(tmp_path: Path, entry: dict[str, object]) -> Path:
    return manifest_with(
        tmp_path, mine={"task": "embedder", "architecture": "arcface", "version": "1", **entry}
    )


def test_the_entry_needs_an_onnx_file_with_its_hash(tmp_path: Path) -> None:
    model = tmp_path / "e.onnx"
    build_embedder(model, dim=32)
    settings = Settings(models_dir=Settings().models_dir)
    no_hash = Manifest.load(manifest_with_mine(tmp_path, {"file": str(model)})).models["mine"]
    with pytest.raises(ModelFileError, match="sha256"):
        model_factory(no_hash, settings)
    wrong_hash = Manifest.load(
        manifest_with_mine(tmp_path, {"file": str(model), "sha256": "0" * 64})
    ).models["mine"]
    with pytest.raises(ModelFileError):
        model_factory(wrong_hash, settings)()
    graph = Manifest.load(
        manifest_with_mine(tmp_path, {"file": str(tmp_path / "e.pb"), "sha256": "0" * 64})
    ).models["mine"]
    with pytest.raises(ModelFileError, match="ONNX"):
        model_factory(graph, settings)
    good = Manifest.load(
        manifest_with_mine(tmp_path, {"file": str(model), "sha256": sha256_file(model)})
    ).models["mine"]
    assert model_factory(good, settings)().dim == 32


def test_without_a_threshold_or_calibration_the_service_says_what_to_run(tmp_path: Path) -> None:
    model = tmp_path / "e.onnx"
    build_embedder(model, dim=32)
    entry = {"file": str(model), "sha256": sha256_file(model)}
    registry = ModelRegistry(
        Settings(model_manifest=manifest_with_mine(tmp_path, entry), embedder="mine")
    )
    assert registry.embedder_contract is not None
    assert registry.embedder_input_size == 112
    with pytest.raises(ModelFileError, match="facesvc eval calibrate --embedder mine"):
        _ = registry.threshold
    # a calibration file named but not written yet (while `eval calibrate` runs): the same
    entry["calibration_file"] = str(tmp_path / "not-yet.json")
    registry = ModelRegistry(
        Settings(model_manifest=manifest_with_mine(tmp_path, entry), embedder="mine")
    )
    with pytest.raises(ModelFileError, match="eval calibrate"):
        _ = registry.threshold
