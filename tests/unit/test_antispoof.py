"""The slot for an operator's presentation-attack model: its crop and tensor contract
(MiniFASNet's), its manifest checks, and how liveness sessions use its scores.

No presentation-attack model ships in a PyPI package, so the tensor path is checked with a
small ONNX graph built here whose output is known in closed form (each channel's mean as a
logit): it tells channel order, pixel scale, layout and the live index apart, and is not a
stand-in for a real detector.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from facesvc.inference.antispoof import AntispoofContract, AntispoofModel, antispoof_crop
from facesvc.inference.manifest import Manifest, sha256_file
from facesvc.inference.registry import ModelFileError, ModelRegistry
from facesvc.inference.types import Box
from facesvc.services.liveness.checker import FrameObservation
from facesvc.settings import Settings
from tests.support.data import lfw_image
from tests.support.liveness_frames import T, frame, run, shows

ROOT = Path(__file__).resolve().parents[2]


def photo() -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(lfw_image("Tony_Blair", 1), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_crop_is_2_7_times_the_box_in_bgr_0_to_255() -> None:
    small = photo()
    canvas = np.zeros((1000, 1000, 3), np.uint8)
    canvas[375:625, 375:625] = small
    box = Box(450.0, 440.0, 100.0, 120.0)
    contract = AntispoofContract()
    crop = antispoof_crop(canvas, box, contract)
    assert crop.shape == (80, 80, 3)
    assert crop.dtype == np.uint8
    # 2.7 x (100, 120) = (270, 324) around the centre (500, 500)
    x0, y0 = (500 - 135), (500 - 162)
    expected = cv2.resize(canvas[y0 : y0 + 325, x0 : x0 + 271], (80, 80))
    np.testing.assert_array_equal(crop, expected[:, :, ::-1])  # BGR


def test_crop_shrinks_and_shifts_to_stay_inside_the_photo() -> None:
    image = photo()  # 250 x 250
    box = Box(10.0, 20.0, 120.0, 120.0)  # near the top-left corner
    crop = antispoof_crop(image, box, AntispoofContract(channel_order="rgb"))
    # scale min(249/120, 2.7) -> a 249 px box shifted to the photo's corner; its last row
    # and column are included, as MiniFASNet's own crop does
    expected = cv2.resize(image[0:250, 0:250], (80, 80))
    np.testing.assert_array_equal(crop, expected)


def test_contract_options_are_checked() -> None:
    assert AntispoofContract.from_options({"input_size": 128}).input_size == 128
    with pytest.raises(ValueError, match="channel_order"):
        AntispoofContract.from_options({"channel_order": "bgra"})
    with pytest.raises(ValueError, match="output"):
        AntispoofContract.from_options({"output": "scores"})


def channel_mean_graph(path: Path, size: int) -> None:
    """logits[n, c] = mean over the c-th input channel (NCHW float32)."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    node = helper.make_node("ReduceMean", ["input", "axes"], ["logits"], keepdims=0)
    graph = helper.make_graph([node], "channel_mean", [x], [y], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)


def test_tensor_layout_scale_softmax_and_live_index(tmp_path: Path) -> None:
    path = tmp_path / "channel_mean.onnx"
    channel_mean_graph(path, 80)
    # BGR crops: a pure red face (R = 2 in BGR order) and a pure blue one (B = 0)
    red = np.zeros((1, 80, 80, 3), np.uint8)
    red[..., 2] = 3
    blue = np.zeros((1, 80, 80, 3), np.uint8)
    blue[..., 0] = 3
    crops = np.concatenate([red, blue])
    model = AntispoofModel(path, AntispoofContract(live_index=2))
    live = model.predict(crops)
    # raw 0-255 values, not /255: logits (0, 0, 3) -> softmax e^3 / (2 + e^3)
    np.testing.assert_allclose(live, [np.e**3 / (2 + np.e**3), 1 / (2 + np.e**3)], rtol=1e-5)
    scaled = AntispoofModel(path, AntispoofContract(live_index=2, pixel_scale=1 / 255))
    assert scaled.predict(red)[0] == pytest.approx(
        np.exp(3 / 255) / (2 + np.exp(3 / 255)), rel=1e-5
    )


def manifest_with(tmp_path: Path, entry: dict[str, object]) -> Path:
    data = json.loads((ROOT / "models" / "manifest.json").read_text(encoding="utf-8"))
    data["models"]["my-pad"] = entry
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_the_registry_loads_it_only_when_named(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    channel_mean_graph(models / "pad.onnx", 80)
    entry = {
        "task": "antispoof",
        "architecture": "minifasnet",
        "version": "operator-1",
        "file": "pad.onnx",
        "options": {"live_index": 1},
    }
    manifest = manifest_with(tmp_path, entry)
    base = Settings(_env_file=None, model_manifest=manifest, models_dir=ROOT / "models")
    assert ModelRegistry(base).antispoof is None  # off by default
    named = base.model_copy(update={"antispoof_model": "my-pad", "models_dir": models})
    registry = ModelRegistry(named, Manifest.load(manifest))
    assert registry.antispoof is not None
    assert registry.specs[-1].name == "my-pad"
    with pytest.raises(ModelFileError, match="sha256"):
        registry.slots[-1].factory(named)  # no hash in the entry: refused
    entry["sha256"] = sha256_file(models / "pad.onnx")
    manifest = manifest_with(tmp_path, entry)
    registry = ModelRegistry(named, Manifest.load(manifest))
    slot = registry.slots[-1]
    assert slot.runner is registry.antispoof
    slot.runner.start_sync(slot.factory(named), slot.warm_batch)  # as the registry's start
    assert slot.runner.run_sync(slot.warm_batch).shape == (1,)
    registry.close()
    entry["sha256"] = "0" * 64
    registry = ModelRegistry(named, Manifest.load(manifest_with(tmp_path, entry)))
    with pytest.raises(ModelFileError, match="sha256"):
        registry.slots[-1].factory(named)
    with pytest.raises(ValueError, match="not a antispoof"):
        ModelRegistry(named.model_copy(update={"antispoof_model": "facemesh"}))


def test_the_slot_table_pairs_each_runner_with_its_spec(tmp_path: Path) -> None:
    entry = {"task": "antispoof", "architecture": "minifasnet", "version": "1", "file": "pad.onnx"}
    settings = Settings(
        _env_file=None,
        model_manifest=manifest_with(tmp_path, entry),
        models_dir=ROOT / "models",
        attributes=True,
        antispoof_model="my-pad",
    )
    registry = ModelRegistry(settings)
    tasks = ["detector", "mesh", "embedder", "age", "gender", "expression", "antispoof"]
    assert [spec.task for spec in registry.specs] == tasks
    assert [runner.name for runner in registry.runners] == [spec.name for spec in registry.specs]
    assert [(m.name, m.task) for m in registry.info()] == [
        (spec.name, spec.task) for spec in registry.specs
    ]
    named = [registry.detector, registry.mesh, registry.embedder, *registry.attributes.values()]
    assert [*named, registry.antispoof] == list(registry.runners)
    assert registry.attribute_specs == {s.task: s for s in registry.specs[3:6]}
    assert registry.specs[-1].name == "my-pad"
    registry.close()


def test_sessions_fail_when_the_frames_do_not_look_live() -> None:
    def scored(observed: FrameObservation, live: float) -> FrameObservation:
        return dataclasses.replace(observed, live_score=live)

    frames = [frame(), shows("turn_left")]
    assert run(["turn_left"], frames).status == "passed"  # no model: not consulted
    live = [scored(f, T.min_live_score + 0.3) for f in frames]
    assert run(["turn_left"], live).status == "passed"
    spoof = [scored(f, T.min_live_score - 0.3) for f in frames]
    result = run(["turn_left"], spoof)
    assert (result.status, result.reason) == ("failed", "presentation-attack")
