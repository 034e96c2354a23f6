"""Score calibration: FAR/TAR by threshold, their inverse, the logistic fit, 1:N thresholds,
JSON, the all-pairs histograms of ``eval calibrate`` and the committed calibration file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from facesvc.evaluation.cache import CachedFace
from facesvc.evaluation.calibrate import (
    all_pair_histograms,
    calibrate_embedded,
    image_labels,
    pair_count,
)
from facesvc.evaluation.lfw import EmbeddedImages
from facesvc.inference.calibration import (
    ScoreCalibration,
    ScoreHistogram,
    false_match_rate,
    per_comparison_far,
)
from facesvc.inference.manifest import Manifest
from facesvc.settings import PROJECT_ROOT

COMMITTED = PROJECT_ROOT / "models" / "calibration" / "facenet.json"

# Two normal score distributions of equal spread: the log-likelihood ratio is linear,
# (mu_g - mu_i) / sd^2 * s - (mu_g^2 - mu_i^2) / (2 sd^2) = 60 s - 24, crossing at 0.4.
GENUINE_MEAN, IMPOSTOR_MEAN, SD = 0.7, 0.1, 0.1


@pytest.fixture(scope="module")
def samples() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.normal(GENUINE_MEAN, SD, 40_000), rng.normal(IMPOSTOR_MEAN, SD, 400_000)


@pytest.fixture(scope="module")
def calibration(samples: tuple[np.ndarray, np.ndarray]) -> ScoreCalibration:
    genuine, impostor = samples
    return ScoreCalibration.from_scores(
        genuine, impostor, space="synthetic", provenance={"dataset": "two normals"}
    )


def test_rates_on_the_grid_are_the_counted_shares(
    samples: tuple[np.ndarray, np.ndarray], calibration: ScoreCalibration
) -> None:
    genuine, impostor = samples
    assert calibration.n_genuine == len(genuine)
    assert calibration.n_impostor == len(impostor)
    for t in (-1.0, 0.0, 0.25, 0.4, 0.5, 0.6):
        assert calibration.far_at(t) == pytest.approx(np.mean(impostor >= t), rel=1e-12)
        assert calibration.tar_at(t) == pytest.approx(np.mean(genuine >= t), rel=1e-12)
    assert calibration.far_at(-5.0) == 1.0
    assert calibration.far_at(1.0) == 0.0


def test_far_and_tar_fall_with_the_threshold(calibration: ScoreCalibration) -> None:
    ts = np.linspace(-1.0, 1.0, 4001)
    far = np.array([calibration.far_at(float(t)) for t in ts])
    tar = np.array([calibration.tar_at(float(t)) for t in ts])
    assert np.all(np.diff(far) <= 0)
    assert np.all(np.diff(tar) <= 0)
    assert far[0] == 1.0
    assert tar[0] == 1.0


def test_threshold_for_far_is_monotone_and_inverts_far_at(calibration: ScoreCalibration) -> None:
    targets = np.logspace(-0.3, math.log10(1.01 * calibration.min_far), 60)
    thresholds = [calibration.threshold_for_far(float(f)) for f in targets]
    assert np.all(np.diff(thresholds) >= 0)  # rarer false accepts need a higher threshold
    for far, t in zip(targets, thresholds, strict=True):
        reached = calibration.far_at(t)
        assert reached <= far
        assert reached == pytest.approx(far, rel=1e-9)
        # the smallest such threshold: a hair lower lets more impostors through
        assert calibration.far_at(t - 1e-6) > far


def test_threshold_for_far_on_grid_values_is_the_first_grid_point_reaching_them(
    calibration: ScoreCalibration,
) -> None:
    grid, far = calibration.thresholds, calibration.far
    checked = 0
    for k in range(1, len(grid)):
        if far[k] <= 0 or far[k] < calibration.min_far:
            continue
        first = int(np.flatnonzero(far <= far[k])[0])
        assert calibration.threshold_for_far(float(far[k])) == pytest.approx(grid[first])
        checked += 1
    assert checked > 100


def test_far_below_what_the_data_resolves_is_clamped(calibration: ScoreCalibration) -> None:
    floor = calibration.threshold_for_far(calibration.min_far)
    assert calibration.min_far == 1 / calibration.n_impostor
    assert calibration.threshold_for_far(calibration.min_far / 100) == floor
    assert calibration.threshold_for_far(0.0) == floor
    assert calibration.far_at(floor) <= calibration.min_far
    assert calibration.threshold_for_far(1.0) == calibration.thresholds[0]
    with pytest.raises(ValueError, match="rate"):
        calibration.threshold_for_far(-0.1)


def test_logistic_fit_recovers_the_likelihood_ratio(calibration: ScoreCalibration) -> None:
    assert calibration.logistic_a == pytest.approx(60.0, rel=0.05)
    assert calibration.logistic_b == pytest.approx(-24.0, rel=0.05)
    assert calibration.probability(0.4) == pytest.approx(0.5, abs=0.03)
    values = [calibration.probability(float(s)) for s in np.linspace(-1, 1, 401)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert np.all(np.diff(values) >= 0)
    assert values[0] < 1e-6
    assert values[-1] > 1 - 1e-6
    # a rarer genuine comparison makes the same score less convincing
    assert calibration.probability(0.4, prior=0.01) < 0.05 < calibration.probability(0.4)
    with pytest.raises(ValueError, match="prior"):
        calibration.probability(0.4, prior=1.0)


def test_identification_threshold_grows_with_the_gallery(calibration: ScoreCalibration) -> None:
    one_to_one = calibration.threshold_for_far(0.01)
    assert calibration.identification_threshold(1, 0.01) == pytest.approx(one_to_one, abs=1e-12)
    sizes = (1, 10, 100, 1_000)  # 1% over 1,000 faces: 1e-5 per comparison, resolved
    thresholds = [calibration.identification_threshold(n, 0.01) for n in sizes]
    assert np.all(np.diff(thresholds) > 0)
    for n, t in zip(sizes, thresholds, strict=True):
        assert calibration.expected_false_match_rate(t, n) == pytest.approx(0.01, rel=1e-6)
    # 10,000 faces need 1e-6 per comparison, below the 2.5e-6 that 400,000 impostors resolve:
    # the threshold is clamped, and the rate it promises is honestly higher than asked
    clamped = calibration.identification_threshold(10_000, 0.01)
    assert clamped == calibration.threshold_for_far(calibration.min_far) > thresholds[-1]
    assert calibration.expected_false_match_rate(clamped, 10_000) > 0.01
    assert calibration.expected_false_match_rate(0.3) == calibration.far_at(0.3)


def test_per_comparison_far_keeps_its_digits() -> None:
    # 1 - 0.99 ** 1e-6 in floating point loses half its digits; the log1p/expm1 form does not
    far1 = per_comparison_far(0.01, 1_000_000)
    assert far1 == pytest.approx(1.0050335853501e-08, rel=1e-12)
    assert false_match_rate(far1, 1_000_000) == pytest.approx(0.01, rel=1e-12)
    assert per_comparison_far(1e-12, 1) == pytest.approx(1e-12, rel=1e-12)
    assert false_match_rate(0.5, 2) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="gallery_faces"):
        per_comparison_far(0.01, 0)


def test_json_round_trip(calibration: ScoreCalibration, tmp_path: Path) -> None:
    path = tmp_path / "calibration" / "synthetic.json"
    calibration.save(path)
    loaded = ScoreCalibration.load(path)
    assert loaded.to_dict() == calibration.to_dict()
    np.testing.assert_array_equal(loaded.thresholds, calibration.thresholds)
    np.testing.assert_array_equal(loaded.impostor_at_or_above, calibration.impostor_at_or_above)
    assert loaded.provenance == {"dataset": "two normals"}
    for t in (0.31, 0.4567, 0.6):
        assert loaded.far_at(t) == calibration.far_at(t)
    assert loaded.threshold_for_far(1e-4) == calibration.threshold_for_far(1e-4)
    assert loaded.probability(0.5) == calibration.probability(0.5)


def test_malformed_calibrations_are_refused(calibration: ScoreCalibration) -> None:
    data = calibration.to_dict()
    with pytest.raises(ValueError, match="format"):
        ScoreCalibration.from_dict({**data, "format": "something else"})
    rising = list(data["impostor_at_or_above"])
    rising[-1] = rising[0] + 1
    with pytest.raises(ValueError, match="fall"):
        ScoreCalibration.from_dict({**data, "impostor_at_or_above": rising})
    with pytest.raises(ValueError, match="grid"):
        ScoreCalibration.from_dict({**data, "thresholds": data["thresholds"][::-1]})
    assert calibration.thresholds.flags.writeable is False


def test_all_pair_histograms_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    count, dims = 41, 8
    vectors = rng.normal(size=(count, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = [f"p{i % 9}" for i in range(count)]
    seen: list[int] = []
    # 7-row blocks: pairs inside a block and across blocks both count, once
    result = all_pair_histograms(vectors, labels, seen.append, rows=7, keep_top=5)
    genuine, impostor, top = ScoreHistogram(), ScoreHistogram(), []
    scores = vectors @ vectors.T
    for i in range(count):
        for j in range(i + 1, count):
            if labels[i] == labels[j]:
                genuine.add([scores[i, j]])
            else:
                impostor.add([scores[i, j]])
                top.append(float(scores[i, j]))
    np.testing.assert_array_equal(result.genuine.counts, genuine.counts)
    np.testing.assert_array_equal(result.impostor.counts, impostor.counts)
    assert result.genuine.total + result.impostor.total == pair_count(count) == sum(seen)
    found = [p.score for p in result.top_impostors]
    np.testing.assert_allclose(found, sorted(top, reverse=True)[:5], rtol=1e-6)
    assert all(labels[p.a] != labels[p.b] and p.a < p.b for p in result.top_impostors)


def test_calibrate_embedded_skips_faceless_images_and_relabels_known_errors() -> None:
    def unit(*values: float) -> np.ndarray:
        vector = np.array(values, dtype=np.float32)
        return vector / np.linalg.norm(vector)

    faces = {
        "Ann_A/Ann_A_0001.jpg": unit(1, 0, 0),
        "Ann_A/Ann_A_0002.jpg": unit(1, 0.2, 0),
        "Ann_A/Ann_A_0003.jpg": None,  # no face: in no pair
        "Wang_Yingfan/Wang_Yingfan_0001.jpg": unit(0, 1, 0),
        "Yingfan_Wang/Yingfan_Wang_0001.jpg": unit(0, 1, 0.1),  # the same man
        "Bob_B/Bob_B_0001.jpg": unit(0, 0, 1),
    }
    embedded = EmbeddedImages(
        {name: CachedFace(v, int(v is not None)) for name, v in faces.items()}
    )
    run = calibrate_embedded(embedded, list(faces), space="test", provenance={"command": "x"})
    # 5 images with a face: 10 pairs, 2 of one person (Ann, Wang Yingfan under two names)
    assert run.calibration.n_genuine == 2
    assert run.calibration.n_impostor == 8
    assert run.failures == ["Ann_A/Ann_A_0003.jpg"]
    assert run.report["label_corrections"] == {"Yingfan_Wang/Yingfan_Wang_0001.jpg": "Wang_Yingfan"}
    assert run.calibration.provenance["command"] == "x"
    assert run.calibration.provenance["people"] == 3
    assert run.calibration.tar_at(0.95) == 1.0  # both genuine pairs score above 0.98
    assert run.calibration.far_at(0.5) == 0.0  # the impostors are orthogonal


def test_image_labels_apply_corrections() -> None:
    images = [
        "Ann_A/Ann_A_0001.jpg",
        "Yingfan_Wang/Yingfan_Wang_0001.jpg",
        "Sepp_Blatter/Sepp_Blatter_0003.jpg",
    ]
    assert image_labels(images) == ["Ann_A", "Wang_Yingfan", "Joseph_Blatter"]
    assert image_labels(images, {}, {}) == ["Ann_A", "Yingfan_Wang", "Sepp_Blatter"]


def test_manifest_names_the_calibration_of_each_embedder(
    calibration: ScoreCalibration, tmp_path: Path
) -> None:
    manifest = Manifest.load(PROJECT_ROOT / "models" / "manifest.json")
    for name in ("facenet", "facenet-tflite"):
        spec = manifest.get(name, "embedder")
        assert spec.calibration_path(tmp_path) == tmp_path / "calibration" / "facenet.json"
    assert manifest.get("blazeface", "detector").load_calibration(tmp_path) is None
    # a calibration of another embedding space is refused
    calibration.save(tmp_path / "calibration" / "facenet.json")
    with pytest.raises(ValueError, match="synthetic"):
        manifest.get("facenet", "embedder").load_calibration(tmp_path)


def test_committed_calibration_loads_and_is_plausible() -> None:
    manifest = Manifest.load(PROJECT_ROOT / "models" / "manifest.json")
    spec = manifest.get("facenet-tflite", "embedder")
    loaded = spec.load_calibration(PROJECT_ROOT / "models")
    assert loaded is not None
    assert loaded.space == "facenet"
    assert 0.3 <= loaded.threshold_for_far(1e-3) <= 0.7
    assert loaded.n_impostor > 80_000_000  # every cross-identity pair of LFW
    assert loaded.min_far < 1e-7
    assert json.loads(COMMITTED.read_text(encoding="utf-8"))["space"] == "facenet"
    # the service's 1:1 threshold accepts most genuine pairs and few impostors
    assert loaded.tar_at(0.4) > 0.95
    assert loaded.far_at(0.4) < 0.05
