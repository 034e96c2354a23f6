"""Enrolment quality: size, sharpness and pose of real LFW faces through the real pipeline,
the pose arithmetic on synthetic five points, the gate's order, and the threshold rule.

Faces used (picked by eye): Brian_Wells_0002, a sharp frontal face of ~100 px; Tom_Daschle_0021,
turned about 45 degrees to the image's left and looking down (five-point yaw about -49).
"""

from __future__ import annotations

import itertools
import json
import math

import cv2
import numpy as np
import pytest

from facesvc.evaluation.lfw import Pair, nearest_centre
from facesvc.evaluation.quality import genuine_subsets
from facesvc.evaluation.quality_analysis import angle_threshold, crossing
from facesvc.evaluation.quality_measure import downscale_to_face
from facesvc.inference.images import decode_image
from facesvc.inference.pipeline import FacePipeline
from facesvc.inference.quality import (
    PITCH_NEUTRAL,
    YAW_GAIN,
    FaceQuality,
    QualityThresholds,
    assess_face,
    pose_angles,
    sharpness,
)
from facesvc.inference.types import AnalysedFace, Box
from facesvc.settings import PROJECT_ROOT
from tests.support.data import lfw_image

FRONTAL = ("Brian_Wells", 2)
TURNED = ("Tom_Daschle", 21)
GATE = QualityThresholds()


def decoded(name: str, number: int) -> np.ndarray:
    """An LFW photo as the service decodes an upload (RGB)."""
    return decode_image(lfw_image(name, number), max_pixels=1_000_000)


async def centre_face(pipeline: FacePipeline, image: np.ndarray) -> AnalysedFace:
    """What enrolment hands to the gate: the face's box and five points, as found."""
    detections = await pipeline.detect(image)
    assert detections, "no face found"
    centre = nearest_centre(detections, image.shape[1], image.shape[0])
    (face,) = await pipeline.landmarks(image, [centre])
    return face


async def assessed(pipeline: FacePipeline, image: np.ndarray) -> FaceQuality:
    face = await centre_face(pipeline, image)
    return assess_face(image, face.box, face.five_points)


async def test_sharp_frontal_face_passes(pipeline: FacePipeline) -> None:
    quality = await assessed(pipeline, decoded(*FRONTAL))
    assert GATE.problem(quality) is None, quality
    assert quality.face_size_px > 2 * GATE.min_face_size_px
    assert quality.sharpness > 1.5 * GATE.min_sharpness
    assert abs(quality.yaw_deg) < 10
    assert abs(quality.pitch_deg) < 10
    assert quality.score > 0.9


async def test_blurred_face_is_too_blurry(pipeline: FacePipeline) -> None:
    image = cv2.GaussianBlur(decoded(*FRONTAL), (0, 0), 4.0)
    quality = await assessed(pipeline, image)
    assert quality.face_size_px >= GATE.min_face_size_px  # still found at full size
    assert GATE.problem(quality) == "face-too-blurry", quality
    assert quality.score < 0.5


async def test_downscaled_face_is_too_small(pipeline: FacePipeline) -> None:
    image = decoded(*FRONTAL)
    face = await centre_face(pipeline, image)
    small = downscale_to_face(image, min(face.box.width, face.box.height), 20)
    assert small is not None
    quality = await assessed(pipeline, small)
    assert quality.face_size_px == pytest.approx(20, abs=4)
    assert GATE.problem(quality) == "face-too-small", quality


async def test_sharpness_barely_depends_on_resolution(pipeline: FacePipeline) -> None:
    image = decoded(*FRONTAL)
    face = await centre_face(pipeline, image)
    full = sharpness(image, face.box)
    factor = 0.7  # the face ~100 px -> ~70 px (both well above SHARPNESS_SIZE)
    height, width = image.shape[:2]
    smaller = cv2.resize(
        image, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_AREA
    )
    reduced = sharpness(smaller, face.box.scaled(factor))
    assert reduced == pytest.approx(full, rel=0.25)
    # the tolerance is tight next to what a blur does to the same face at the same size
    assert sharpness(cv2.GaussianBlur(image, (0, 0), 3.0), face.box) < 0.3 * full


async def test_strongly_turned_face_is_turned_away(pipeline: FacePipeline) -> None:
    quality = await assessed(pipeline, decoded(*TURNED))
    assert quality.yaw_deg < -GATE.max_yaw_deg  # turned towards the image's left
    assert GATE.problem(quality) == "face-turned-away", quality


def frontal_points(
    nose_dx: float = 0.0, *, along: float = PITCH_NEUTRAL, roll_deg: float = 0.0
) -> np.ndarray:
    """Five points of a level face, eyes 40 px apart, mouth 45 px below the eyes; the nose
    ``along`` the way from eyes to mouth and ``nose_dx`` px sideways; rotated by ``roll_deg``."""
    points = np.array(
        [[80, 100], [120, 100], [100 + nose_dx, 100 + 45 * along], [84, 145], [116, 145]],
        dtype=np.float64,
    )
    angle = math.radians(roll_deg)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return (points - 100) @ rotation.T + 100


def test_yaw_grows_as_the_nose_moves_sideways() -> None:
    yaws = [pose_angles(frontal_points(dx))[0] for dx in (0, 2, 5, 10, 20)]
    assert yaws[0] == pytest.approx(0, abs=1e-9)
    assert all(b > a for a, b in itertools.pairwise(yaws))
    # the documented mapping: offset / inter-ocular distance r -> atan(YAW_GAIN r)
    assert yaws[3] == pytest.approx(math.degrees(math.atan(YAW_GAIN * 10 / 40)))
    assert pose_angles(frontal_points(-10))[0] == pytest.approx(-yaws[3])  # mirror image
    # roll is not a turn: the same face rotated in the image reads the same
    rolled_yaw, rolled_pitch = pose_angles(frontal_points(10, roll_deg=25))
    assert rolled_yaw == pytest.approx(yaws[3])
    assert rolled_pitch == pytest.approx(0, abs=1e-9)


def test_pitch_follows_the_nose_between_eyes_and_mouth() -> None:
    level = pose_angles(frontal_points())[1]
    down = pose_angles(frontal_points(along=PITCH_NEUTRAL + 0.2))[1]
    up = pose_angles(frontal_points(along=PITCH_NEUTRAL - 0.2))[1]
    assert level == pytest.approx(0, abs=1e-9)
    assert down > 10
    assert up == pytest.approx(-down)


def test_degenerate_points_read_as_turned_away() -> None:
    points = frontal_points()
    points[1] = points[0]  # eyes on top of each other: a profile
    yaw, _ = pose_angles(points)
    assert abs(yaw) == 90
    quality = FaceQuality(100, 2 * GATE.min_sharpness, yaw, 0, 0)
    assert GATE.problem(quality) == "face-turned-away"


def test_gate_reports_the_first_failure_in_order() -> None:
    good = {
        "face_size_px": 100.0,
        "sharpness": 4 * GATE.min_sharpness,
        "yaw_deg": 5.0,
        "pitch_deg": 5.0,
    }
    bad = {
        "face_size_px": 10.0,
        "sharpness": GATE.min_sharpness / 4,
        "yaw_deg": 80.0,
        "pitch_deg": 80.0,
    }

    def problem(*failing: str) -> str | None:
        values = {k: bad[k] if k in failing else v for k, v in good.items()}
        return GATE.problem(FaceQuality(**values, score=0.0))

    assert problem() is None
    assert problem("face_size_px", "sharpness", "yaw_deg") == "face-too-small"
    assert problem("sharpness", "yaw_deg") == "face-too-blurry"
    assert problem("yaw_deg") == "face-turned-away"
    assert problem("pitch_deg") == "face-turned-away"
    # thresholds are inclusive on the passing side
    edge = FaceQuality(
        GATE.min_face_size_px, GATE.min_sharpness, -GATE.max_yaw_deg, GATE.max_pitch_deg, 0.5
    )
    assert GATE.problem(edge) is None


def test_score_is_one_half_at_a_threshold_and_rises_with_quality() -> None:
    at_size = GATE.score(GATE.min_face_size_px, 1e9, 0, 0)
    assert at_size == pytest.approx(0.5)
    assert GATE.score(0, 1e9, 0, 0) == 0.0  # no pixels, no face
    assert GATE.score(1e9, 1e9, GATE.max_yaw_deg, 0) == pytest.approx(0.5)
    scores = [GATE.score(s, 1e9, 0, 0) for s in (10, 20, 40, 80, 160)]
    assert scores == sorted(scores)
    assert 0 < scores[0] < 0.5 < scores[-1] < 1


def test_sharpness_of_a_box_outside_the_image_is_zero() -> None:
    image = np.full((50, 50, 3), 128, np.uint8)
    assert sharpness(image, Box(60, 60, 20, 20)) == 0.0
    noisy = np.random.default_rng(0).integers(0, 255, (50, 50, 3), dtype=np.uint8)
    assert sharpness(noisy, Box(-10, -10, 40, 40)) > sharpness(image, Box(-10, -10, 40, 40))


def test_defaults_are_the_thresholds_the_evaluation_chose() -> None:
    report = json.loads((PROJECT_ROOT / "docs/eval/quality.json").read_text(encoding="utf-8"))
    chosen = report["thresholds"]
    assert chosen == {
        "min_face_size_px": GATE.min_face_size_px,
        "min_sharpness": GATE.min_sharpness,
        "max_yaw_deg": GATE.max_yaw_deg,
        "max_pitch_deg": GATE.max_pitch_deg,
    }


def curve(tars: list[float], values: list[float]) -> list[dict[str, float]]:
    return [
        {"level": i, "tar": t, "value_median": v}
        for i, (t, v) in enumerate(zip(tars, values, strict=True))
    ]


def test_crossing_interpolates_on_a_log_scale() -> None:
    # 0.97 at 100, 0.93 at 25: halfway in TAR is halfway in log value, i.e. 50
    assert crossing(curve([0.99, 0.97, 0.93, 0.5], [400, 100, 25, 10]), 0.95) == pytest.approx(50)
    assert crossing(curve([0.99, 0.97], [400, 100]), 0.95) is None
    # a dip that recovers later still counts: the first fall decides
    assert crossing(curve([0.99, 0.9, 0.99], [100, 50, 25]), 0.95) == pytest.approx(
        100 * (50 / 100) ** (0.04 / 0.09)
    )


def test_angle_threshold_stops_at_a_failing_or_thin_bin() -> None:
    def rows(*bins: tuple[int, float]) -> list[dict[str, float]]:
        return [
            {"from_deg": 5.0 * i, "to_deg": 5.0 * (i + 1), "comparisons": n, "tar": t}
            for i, (n, t) in enumerate(bins)
        ]

    assert angle_threshold(rows((100, 0.99), (50, 0.96), (40, 0.90)), 0.95)[0] == 10.0
    assert angle_threshold(rows((100, 0.99), (50, 0.96), (5, 0.2)), 0.95)[0] == 10.0
    assert angle_threshold(rows((100, 0.99), (50, 0.96)), 0.95)[0] == 10.0
    assert angle_threshold(rows((100, 0.90)), 0.95)[0] == 0.0


def test_genuine_subsets_take_the_first_pairs_of_each_fold() -> None:
    pairs = [
        Pair(f, f"{f}-{i}-a", f"{f}-{i}-b", same)
        for f in range(3)
        for same in (True, False)
        for i in range(4)
    ]
    degrade, pose = genuine_subsets(pairs, per_fold=2, pose_folds=2)
    assert [p.a for p in degrade] == ["0-0-a", "0-1-a", "1-0-a", "1-1-a", "2-0-a", "2-1-a"]
    assert all(p.same for p in pose)
    assert {p.fold for p in pose} == {0, 1}
    assert len(pose) == 8
