"""FACESVC_CPU_RUNTIME: which variant of a model a CPU gets, OpenVINO as a runtime of the real
models, and the manifest/pull rules that come with a second runtime."""

from __future__ import annotations

import json
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest

from facesvc.inference.images import decode_image
from facesvc.inference.manifest import Manifest
from facesvc.inference.pull import pull_one
from facesvc.inference.registry import ModelRegistry, model_factory
from facesvc.inference.runtimes import CPU_FAMILIES, choose_variant, cpu_family, cpu_flags
from facesvc.inference.runtimes.openvino import OpenVINOModel, read_model, save_ir_package
from facesvc.settings import Settings
from tests.support.data import lfw_image, require_data

AMX = frozenset({"avx2", "fma", "avx512f", "avx512_vnni", "amx_int8", "amx_bf16", "amx_tile"})
VNNI = frozenset({"avx2", "fma", "avx512f", "avx512_vnni"})
AVX2 = frozenset({"avx2", "fma"})


def manifest_with(tmp_path: Path, prefer_on: list[str], pulled: bool = True) -> Manifest:
    """The committed manifest with facenet-openvino-int8 preferred on ``prefer_on``, its files
    (empty stand-ins: choosing never reads them) in ``tmp_path``."""
    data = json.loads(Settings(dev_mode=True).manifest_path.read_text())
    data["models"]["facenet-openvino-int8"]["prefer_on"] = prefer_on
    manifest = Manifest.model_validate(data)
    for name, spec in manifest.models.items():
        spec.name = name
        if spec.file and (pulled or name != "facenet-openvino-int8"):
            (tmp_path / spec.file).touch()
    return manifest


@pytest.mark.parametrize(
    ("mode", "flags", "pulled", "expected"),
    [
        ("auto", AMX, True, "facenet-openvino-int8"),  # measured faster on this CPU kind
        ("auto", AVX2, True, "facenet-int8"),  # not measured faster here: the default stays
        ("auto", VNNI, True, "facenet-int8"),  # AVX-512 VNNI without AMX: another family
        ("auto", AMX, False, "facenet-int8"),  # not pulled (no calibration faces): default
        ("tflite", AMX, True, "facenet-int8"),
        ("openvino", AVX2, True, "facenet-openvino-int8"),
        ("openvino", AVX2, False, "facenet-openvino"),  # the next OpenVINO variant
    ],
)
def test_the_cpu_runtime_picks_a_variant_by_measured_flags(
    tmp_path: Path, mode: str, flags: frozenset[str], pulled: bool, expected: str
) -> None:
    manifest = manifest_with(tmp_path, ["amx"], pulled)
    choice = choose_variant(manifest, "facenet-int8", mode, tmp_path, flags)  # type: ignore[arg-type]
    assert choice.name == expected
    if expected != "facenet-int8":
        assert choice.reason
        assert expected in choice.reason
    if mode == "auto" and not pulled:
        assert choice.reason
        assert "not pulled" in choice.reason


def test_a_variant_never_crosses_its_family(tmp_path: Path) -> None:
    """An embedder is swapped only for one of its own embedding space; a detector only for
    the same network (full range stays full range)."""
    manifest = manifest_with(tmp_path, ["amx"])
    assert choose_variant(manifest, "blazeface", "openvino", tmp_path, AMX).name == (
        "blazeface-openvino"
    )
    assert choose_variant(manifest, "blazeface-short", "openvino", tmp_path, AMX).name == (
        "blazeface-short"
    )
    assert choose_variant(manifest, "facenet", "auto", tmp_path, AVX2).name == "facenet"


def test_auto_swaps_only_the_default_model(tmp_path: Path) -> None:
    """A model other than the default, named by the operator, is loaded as named under
    ``auto``; the default is swapped even when a .env restates it; ``tflite`` never swaps."""
    manifest_path = tmp_path / "manifest.json"
    data = json.loads(Settings(dev_mode=True).manifest_path.read_text())
    data["models"]["facenet-openvino-int8"]["prefer_on"] = [cpu_family()]
    manifest_path.write_text(json.dumps(data))
    base = Settings(dev_mode=True, model_manifest=manifest_path)
    named = ModelRegistry(base.model_copy(update={"embedder": "facenet-tflite"}))
    assert named.embedder_spec.name == "facenet-tflite"
    restated = ModelRegistry(base.model_copy(update={"embedder": "facenet-int8"}))
    assert restated.embedder_spec.name == "facenet-openvino-int8"
    exact = ModelRegistry(base.model_copy(update={"cpu_runtime": "tflite"}))
    assert exact.embedder_spec.name == "facenet-int8"
    everywhere = ModelRegistry(base.model_copy(update={"cpu_runtime": "openvino"}))
    assert everywhere.detector_spec.name == "blazeface-openvino"
    assert everywhere.detector_spec.resolved_runtime == "openvino"


@pytest.mark.parametrize(
    ("flags", "family"),
    [
        (AMX, "amx"),
        (VNNI, "avx512_vnni"),
        (frozenset({"avx2", "fma", "avx512f"}), "avx2"),  # AVX-512 without VNNI
        (AVX2, "avx2"),
        (frozenset({"avx2"}), "baseline"),  # AVX2 without FMA
        (frozenset(), "baseline"),
    ],
)
def test_cpu_families(flags: frozenset[str], family: str) -> None:
    assert cpu_family(flags) == family


def test_a_variant_preferred_on_a_family_is_chosen_there_only(tmp_path: Path) -> None:
    manifest = manifest_with(tmp_path, ["avx512_vnni"])
    for flags, expected in [(VNNI, "facenet-openvino-int8"), (AMX, "facenet-int8")]:
        choice = choose_variant(manifest, "facenet-int8", "auto", tmp_path, flags)
        assert choice.name == expected
    assert "avx512_vnni family" in (
        choose_variant(manifest, "facenet-int8", "auto", tmp_path, VNNI).reason or ""
    )


def test_the_manifest_names_only_known_families(tmp_path: Path) -> None:
    data = json.loads(Settings(dev_mode=True).manifest_path.read_text())
    for spec in data["models"].values():
        assert set(spec.get("prefer_on", [])) <= set(CPU_FAMILIES)
    data["models"]["facenet-openvino-int8"]["prefer_on"] = ["amx_int8"]  # a flag, not a family
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="prefer_on"):
        Manifest.load(path)


def test_cpu_flags_are_read_from_this_machine() -> None:
    flags = cpu_flags()
    if Path("/proc/cpuinfo").exists():
        assert flags, "a Linux machine lists its CPU flags"


def test_file_from_must_name_the_entry_that_pulls_the_same_file(tmp_path: Path) -> None:
    data = json.loads(Settings(dev_mode=True).manifest_path.read_text())
    data["models"]["facenet-openvino"]["file_from"] = "facenet-int8"  # another file
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="file_from"):
        Manifest.load(path)
    shared = Manifest.load(Settings(dev_mode=True).manifest_path).models["facenet-openvino"]
    assert shared.state_name == "facenet-tflite"  # its recorded hash is the fp32 file's
    assert shared.source is not None
    assert shared.source.convert == "keras_facenet_h5_to_tflite"


def test_int8_openvino_is_skipped_without_calibration_faces(tmp_path: Path) -> None:
    """A fresh machine without the data folder still pulls and serves (TFLite): the int8
    OpenVINO model is skipped and said so, never quantised on made-up data."""
    spec = Manifest.load(Settings(dev_mode=True).manifest_path).models["facenet-openvino-int8"]
    lines: list[str] = []
    result = pull_one(spec, tmp_path, lines.append, data_dir=tmp_path / "no-data")
    assert result.action == "skipped"
    assert not (tmp_path / "facenet_128_int8.openvino.zip").exists()
    assert "calibration faces" in lines[-1]


def test_the_ir_package_round_trips_byte_for_byte(tmp_path: Path) -> None:
    """The int8 model's one-file IR package: read back it computes the same, and writing it
    again gives the same bytes (one sha256 per model, atomic replace on pull)."""
    settings = Settings(dev_mode=True)
    source = settings.models_dir / "facenet_128_int8.openvino.zip"
    assert source.exists(), "`facesvc models pull` quantises it when the data folder exists"
    first, second = tmp_path / "a.openvino.zip", tmp_path / "b.openvino.zip"
    save_ir_package(read_model(source), first)
    save_ir_package(read_model(first), second)
    assert first.read_bytes() == second.read_bytes()
    x = np.random.default_rng(1).standard_normal((2, 160, 160, 3)).astype(np.float32)
    a = OpenVINOModel(source, threads=1)(x)[0]
    b = OpenVINOModel(second, threads=1)(x)[0]
    assert np.array_equal(a, b)


def test_blazeface_on_openvino_finds_the_same_faces() -> None:
    require_data()
    settings = Settings(dev_mode=True)
    manifest = Manifest.load(settings.manifest_path)
    tflite = model_factory(manifest.get("blazeface", "detector"), settings)()
    openvino = model_factory(manifest.get("blazeface-openvino", "detector"), settings)()
    assert isinstance(openvino.model, OpenVINOModel)
    for name, number in [("Colin_Powell", 1), ("Laura_Bush", 2), ("Tony_Blair", 3)]:
        image = decode_image(lfw_image(name, number), max_pixels=10**7)
        (want,), (got,) = tflite.predict([image]), openvino.predict([image])
        assert len(want) == len(got) >= 1
        for a, b in zip(want, got, strict=True):
            assert abs(a.score - b.score) < 0.01
            assert np.allclose(astuple(a.box), astuple(b.box), atol=1.0)


def test_the_registry_serves_with_openvino() -> None:
    """FACESVC_CPU_RUNTIME=openvino end to end in one registry: every model it can swap runs
    on OpenVINO, says so in its info, and a face gets a 128-d unit embedding."""
    require_data()
    settings = Settings(dev_mode=True, cpu_runtime="openvino", inference_threads=1)
    registry = ModelRegistry(settings)
    registry.start_sync()
    try:
        info = {m.task: m for m in registry.info()}
        assert info["detector"].runtime == "openvino"
        assert info["embedder"].runtime == "openvino"
        assert info["embedder"].name == "facenet-openvino-int8"
        assert info["mesh"].runtime == "tflite"  # no OpenVINO variant: stays as it is
        assert registry.embedding_dim == 128
        image = decode_image(lfw_image("Colin_Powell", 1), max_pixels=10**7)
        (faces,) = registry.detector.model.predict([image])
        assert faces
        crop = np.zeros((1, 160, 160, 3), np.uint8)
        vector = registry.embedder.model.predict(crop)
        assert vector.shape == (1, 128)
        assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-4)
    finally:
        registry.close()
