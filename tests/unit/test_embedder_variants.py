"""The FaceNet variants of the manifest (TF graph; TFLite fp32 and int8; OpenVINO fp32, bf16
and int8) are one embedding space: stored faces of one match probes of another, under one
calibration, whatever runtime FACESVC_CPU_RUNTIME picks on a machine."""

from __future__ import annotations

import numpy as np
import pytest

from facesvc.inference.geometry import CropPolicy, face_crop
from facesvc.inference.images import decode_image
from facesvc.inference.manifest import Manifest
from facesvc.inference.registry import model_factory
from facesvc.settings import Settings
from tests.support.data import lfw_image, require_data

PEOPLE = [("Colin_Powell", (1, 2)), ("Laura_Bush", (1, 2)), ("Tony_Blair", (3, 4))]
VARIANTS = (
    "facenet",
    "facenet-tflite",
    "facenet-int8",
    "facenet-openvino",
    "facenet-openvino-bf16",
    "facenet-openvino-int8",
)
# cosine to TFLite fp32 each variant keeps on every face: fp32 is the same arithmetic, bf16
# rounds activations to 8 mantissa bits, int8 quantises weights (and activations)
AGREEMENT = {"facenet-int8": 0.99, "facenet-openvino-bf16": 0.999, "facenet-openvino-int8": 0.98}


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """The service's 160x160 crops of six LFW faces (three people, two photos each)."""
    require_data()
    settings = Settings(dev_mode=True)
    spec = Manifest.load(settings.manifest_path).get("blazeface", "detector")
    detector = model_factory(spec, settings)()
    out = []
    for name, numbers in PEOPLE:
        for number in numbers:
            image = decode_image(lfw_image(name, number), max_pixels=10**7)
            (found,) = detector.predict([image])
            largest = max(found, key=lambda d: d.box.area)
            out.append(face_crop(image, largest.box, CropPolicy(**spec.crop), 160))
    return np.stack(out)


@pytest.fixture(scope="module")
def embeddings(crops: np.ndarray) -> dict[str, np.ndarray]:
    settings = Settings(dev_mode=True)
    manifest = Manifest.load(settings.manifest_path)
    return {
        name: model_factory(manifest.get(name, "embedder"), settings)().predict(crops)
        for name in VARIANTS
    }


def test_variants_share_one_space_and_one_calibration(embeddings: dict[str, np.ndarray]) -> None:
    manifest = Manifest.load(Settings(dev_mode=True).manifest_path)
    specs = [manifest.get(name, "embedder") for name in VARIANTS]
    assert {s.embedding_space for s in specs} == {"facenet"}
    assert len({s.version for s in specs}) == len(specs)  # a change of variant is visible
    assert {s.threshold for s in specs} == {0.4}
    reference = embeddings["facenet-tflite"]
    for name, vectors in embeddings.items():
        assert vectors.shape == (6, 128)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
        agreement = np.sum(vectors * reference, axis=1)
        assert agreement.min() > AGREEMENT.get(name, 0.9999), (name, agreement)


def test_a_face_enrolled_with_one_variant_is_recognised_with_another(
    embeddings: dict[str, np.ndarray],
) -> None:
    """Every (stored, probe) mix of variants scores each pair within 0.03 of the fp32 model's
    score, so it makes fp32's decision on every pair that is not within that margin of the
    threshold, and the same person's two photos match."""
    threshold, margin = 0.4, 0.03
    reference_scores = embeddings["facenet-tflite"] @ embeddings["facenet-tflite"].T
    reference = reference_scores >= threshold
    assert all(reference[a, a + 1] for a in (0, 2, 4))
    clear = np.abs(reference_scores - threshold) > margin
    for stored in VARIANTS:
        for probe in VARIANTS:
            scores = embeddings[stored] @ embeddings[probe].T
            assert np.abs(scores - reference_scores).max() < margin, (stored, probe)
            decisions = scores >= threshold
            assert (decisions == reference)[clear].all(), (stored, probe)
            assert all(decisions[a, a + 1] for a in (0, 2, 4)), (stored, probe)


@pytest.mark.parametrize("name", ["facenet-int8", "facenet-openvino-int8", "facenet-openvino-bf16"])
def test_an_embedding_does_not_depend_on_the_rest_of_its_batch(
    crops: np.ndarray, name: str
) -> None:
    """Micro-batching merges strangers' faces into one call: int8's on-the-fly activation
    quantisation (TFLite) or a dynamic batch dimension (OpenVINO) must not let them change
    each other's embeddings."""
    settings = Settings(dev_mode=True)
    spec = Manifest.load(settings.manifest_path).get(name, "embedder")
    model = model_factory(spec, settings)()
    mixed = crops.copy()
    mixed[5] = (mixed[5] * 0.2).astype(np.uint8)  # a dark face beside bright ones
    alone = np.concatenate([model.predict(face[None]) for face in mixed])
    together = model.predict(mixed)
    assert np.sum(alone * together, axis=1).min() > 0.9999
