"""The enrolment quality evaluation's analysis (pure: arrays in, figures out): TAR curves by
degradation level and by pose, the thresholds chosen by the rule in evaluation/quality.py's
docstring, the checks behind them, and the plot."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facesvc.evaluation.curves import save_figure
from facesvc.evaluation.lfw import roc_auc
from facesvc.evaluation.quality_measure import (
    BLUR_SIGMAS,
    SHARPNESS_SIZES_STUDIED,
    SIZE_LEVELS_PX,
    Measurement,
    QualityRun,
)
from facesvc.inference.quality import (
    PITCH_GAIN,
    PITCH_NEUTRAL,
    SHARPNESS_SIZE,
    YAW_GAIN,
    QualityThresholds,
)

ANGLE_BIN_DEG = 5.0
MIN_BIN_PAIRS = 30
TAR_TARGET = 0.95


def level_curve(
    levels: np.ndarray,
    values: np.ndarray,
    similarity: np.ndarray,
    found: np.ndarray,
    threshold: float,
    order: Sequence[float],
) -> list[dict[str, Any]]:
    """Per degradation level (in ``order``, best first): photos, share found, TAR over the
    faces found, median similarity and median measured value."""
    rows = []
    for level in order:
        here = levels == level
        hit = here & found
        if not here.any():
            continue
        rows.append(
            {
                "level": float(level),
                "photos": int(here.sum()),
                "found": round(float(hit.sum() / here.sum()), 4),
                "tar": round(float(np.mean(similarity[hit] >= threshold)), 4) if hit.any() else 0.0,
                "similarity_median": round(float(np.median(similarity[hit])), 4)
                if hit.any()
                else None,
                "value_median": round(float(np.median(values[hit])), 4) if hit.any() else None,
            }
        )
    return rows


def crossing(curve: Sequence[dict[str, Any]], target: float) -> float | None:
    """The measured value where TAR first falls below ``target``, walking the curve from its
    best level: log-linear between the last level above and the first below. None if never."""
    for before, after in itertools.pairwise(curve):
        if after["tar"] >= target or after["value_median"] is None:
            continue
        if before["tar"] < target:  # already under at the best level: nothing to interpolate
            return float(before["value_median"])
        share = (before["tar"] - target) / (before["tar"] - after["tar"])
        lo, hi = math.log(after["value_median"]), math.log(before["value_median"])
        return math.exp(hi + share * (lo - hi))
    return None


def angle_curve(
    angles: np.ndarray, similarity: np.ndarray, threshold: float, bin_deg: float = ANGLE_BIN_DEG
) -> list[dict[str, Any]]:
    """Comparisons grouped by the enrolled photo's |angle|: count, TAR, median similarity."""
    magnitude = np.abs(angles)
    known = ~np.isnan(magnitude)
    top = float(np.nanmax(magnitude)) if known.any() else 0.0
    rows = []
    for lo in np.arange(0.0, top + bin_deg, bin_deg):
        here = known & (magnitude >= lo) & (magnitude < lo + bin_deg)
        if not here.any():
            continue
        rows.append(
            {
                "from_deg": float(lo),
                "to_deg": float(lo + bin_deg),
                "comparisons": int(here.sum()),
                "tar": round(float(np.mean(similarity[here] >= threshold)), 4),
                "similarity_median": round(float(np.median(similarity[here])), 4),
            }
        )
    return rows


def angle_threshold(
    curve: Sequence[dict[str, Any]], target: float, min_count: int = MIN_BIN_PAIRS
) -> tuple[float, str]:
    """The largest |angle| to accept and why (see evaluation/quality.py's rule)."""
    last = 0.0
    for row in curve:
        if row["comparisons"] < min_count:
            return last, f"TAR >= {target:g} up to here; fewer than {min_count} comparisons beyond"
        if row["tar"] < target:
            return row["from_deg"], f"TAR {row['tar']:.4f} < {target:g} from here"
        last = row["to_deg"]
    return last, "TAR >= target in every bin"


def _ceil_significant(value: float, digits: int = 2) -> float:
    scale = 10.0 ** (math.floor(math.log10(abs(value))) - digits + 1)
    return math.ceil(value / scale) * scale


def _fit_gain(ratios: np.ndarray, mesh_deg: np.ndarray) -> float:
    """k in tan(angle) = k * ratio, least squares."""
    tangent = np.tan(np.radians(mesh_deg))
    return float(np.sum(ratios * tangent) / np.sum(ratios**2))


def pose_calibration(originals: Sequence[Measurement]) -> dict[str, Any]:
    """How the five-point angles compare with the mesh's 3-D ones, and the refitted constants
    (the ones in ``inference/quality.py`` are these, rounded, from the full run)."""
    rows = [m for m in originals if not math.isnan(m.mesh_yaw_deg)]
    if len(rows) < 10:
        return {"faces": len(rows)}
    yaw = np.array([m.quality.yaw_deg for m in rows])
    pitch = np.array([m.quality.pitch_deg for m in rows])
    mesh_yaw = np.array([m.mesh_yaw_deg for m in rows])
    mesh_pitch = np.array([m.mesh_pitch_deg for m in rows])
    yaw_ratio = np.tan(np.radians(yaw)) / YAW_GAIN  # back to the raw five-point ratios
    along = np.tan(np.radians(pitch)) / PITCH_GAIN + PITCH_NEUTRAL
    slope, intercept = np.polyfit(along, np.tan(np.radians(mesh_pitch)), 1)
    return {
        "faces": len(rows),
        "reference": "face mesh 3-D: depth slope of the eye line (yaw) and of the eyes-to-mouth "
        "line (pitch)",
        "yaw_gain": YAW_GAIN,
        "yaw_gain_refit": round(_fit_gain(yaw_ratio, mesh_yaw), 3),
        "yaw_rmse_deg": round(float(np.sqrt(np.mean((yaw - mesh_yaw) ** 2))), 2),
        "yaw_correlation": round(float(np.corrcoef(yaw, mesh_yaw)[0, 1]), 4),
        "pitch_gain": PITCH_GAIN,
        "pitch_neutral": PITCH_NEUTRAL,
        "pitch_gain_refit": round(float(slope), 3),
        "pitch_neutral_refit": round(float(-intercept / slope), 3),
        "pitch_rmse_deg": round(float(np.sqrt(np.mean((pitch - mesh_pitch) ** 2))), 2),
        "pitch_correlation": round(float(np.corrcoef(pitch, mesh_pitch)[0, 1]), 4),
    }


def _auc_of_success(values: np.ndarray, success: np.ndarray) -> float | None:
    keep = ~np.isnan(values)
    values, success = values[keep], success[keep]
    if success.all() or not success.any():
        return None
    return round(roc_auc(values, success), 4)


def quality_report(run: QualityRun, target: float = TAR_TARGET) -> dict[str, Any]:
    """Curves, chosen thresholds and the checks behind them (JSON-ready)."""
    s = run.samples.arrays()
    t = run.match_threshold
    kind, level, found, sim = s["kind"], s["level"], s["found"], s["similarity"]
    original = kind == "original"

    def curve(name: str, order: Sequence[float], values: np.ndarray) -> list[dict[str, Any]]:
        keep = original | (kind == name)
        return level_curve(level[keep], values[keep], sim[keep], found[keep], t, order)

    size_curve = curve("size", [0.0, *sorted(SIZE_LEVELS_PX, reverse=True)], s["face_size_px"])
    blur_curve = curve("blur", [0.0, *BLUR_SIGMAS], s["sharpness"])
    size_at = crossing(size_curve, target)
    sharp_at = crossing(blur_curve, target)

    pose = run.pose
    pose_sim = np.array(pose.similarity)
    yaw_curve = angle_curve(np.array(pose.enrolled_yaw_deg), pose_sim, t)
    pitch_curve = angle_curve(np.array(pose.enrolled_pitch_deg), pose_sim, t)
    yaw_at, yaw_why = angle_threshold(yaw_curve, target)
    pitch_at, pitch_why = angle_threshold(pitch_curve, target)

    chosen = QualityThresholds(
        min_face_size_px=float(math.ceil(size_at)) if size_at else 0.0,
        min_sharpness=_ceil_significant(sharp_at) if sharp_at else 0.0,
        max_yaw_deg=float(math.floor(yaw_at)),
        max_pitch_deg=float(math.floor(pitch_at)),
    )

    measured = [m for m in run.originals.values() if m is not None]
    gate_on_originals = {
        "photos": len(measured),
        "rejected": round(
            sum(chosen.problem(m.quality) is not None for m in measured) / max(len(measured), 1), 4
        ),
    }
    for problem in ("face-too-small", "face-too-blurry", "face-turned-away"):
        gate_on_originals[problem] = sum(chosen.problem(m.quality) == problem for m in measured)

    success = found & (sim >= t)
    size_rows = (kind == "size") | original
    blur_rows = (kind == "blur") | original
    sharp_at_sizes = s["sharpness_at"]
    sizes_study = []
    for column, crop in enumerate(SHARPNESS_SIZES_STUDIED):
        values = sharp_at_sizes[:, column]
        study_curve = curve("blur", [0.0, *BLUR_SIGMAS], values)
        at = crossing(study_curve, target)
        natural = np.array([m.sharpness_at[column] for m in measured])
        passing_size = (kind == "size") & found & (s["face_size_px"] >= chosen.min_face_size_px)
        sizes_study.append(
            {
                "crop_px": crop,
                "threshold": None if at is None else round(at, 2),
                "auc_blur_success": _auc_of_success(values[blur_rows], success[blur_rows]),
                "lfw_originals_rejected": None
                if at is None
                else round(float(np.mean(natural < at)), 4),
                "small_faces_passing_size_rejected": None
                if at is None
                else round(float(np.mean(values[passing_size] < at)), 4),
            }
        )

    scores = np.array(s["score"])
    return {
        "match_threshold": t,
        "tar_target": target,
        "rule": (
            "walking from good to bad, the threshold is where TAR of genuine pairs at the match "
            "threshold (over faces found) first falls below the target: size and sharpness "
            "interpolated on a log scale between the medians of the neighbouring degradation "
            f"levels, pose at a {ANGLE_BIN_DEG:g}-degree bin edge (bins of >= {MIN_BIN_PAIRS} "
            "comparisons); rounded up for size (px) and sharpness (2 significant digits), down "
            "for angles (whole degrees)"
        ),
        "thresholds": {
            "min_face_size_px": chosen.min_face_size_px,
            "min_sharpness": chosen.min_sharpness,
            "max_yaw_deg": chosen.max_yaw_deg,
            "max_pitch_deg": chosen.max_pitch_deg,
        },
        "unrounded": {
            "face_size_px": None if size_at is None else round(size_at, 2),
            "sharpness": None if sharp_at is None else round(sharp_at, 2),
            "yaw": yaw_why,
            "pitch": pitch_why,
        },
        "pairs": {
            "degraded": int(original.sum()),
            "pose_comparisons": len(pose_sim),
            "pose_pairs": len(pose_sim) // 2,
        },
        "size": {
            "degradation": "photo downscaled (INTER_AREA) so the face box's shorter side is "
            "the level (px); level 0: the original",
            "value": "face_size_px measured on the downscaled photo",
            "curve": size_curve,
            "auc_success": {
                "note": "how well each candidate measure of face size tells matches from "
                "misses (ROC AUC): on the downscaled photos, and on LFW's own photos (pose "
                "comparisons, by the enrolled photo's size)",
                "downscaled_box_shorter_side": _auc_of_success(
                    s["face_size_px"][size_rows], success[size_rows]
                ),
                "downscaled_inter_ocular": _auc_of_success(
                    s["inter_ocular_px"][size_rows], success[size_rows]
                ),
                "lfw_box_shorter_side": _auc_of_success(
                    np.array(pose.enrolled_face_size_px), pose_sim >= t
                ),
                "lfw_inter_ocular": _auc_of_success(
                    np.array(pose.enrolled_inter_ocular_px), pose_sim >= t
                ),
            },
        },
        "sharpness": {
            "degradation": "Gaussian blur, sigma = the level (px, on ~110 px faces); 0: original",
            "value": f"variance of the Laplacian of the grey face box at {SHARPNESS_SIZE} px",
            "curve": blur_curve,
            "crop_size_study": sizes_study,
        },
        "yaw": {"value": "|yaw| of the enrolled photo (degrees)", "curve": yaw_curve},
        "pitch": {"value": "|pitch| of the enrolled photo (degrees)", "curve": pitch_curve},
        "pose_calibration": pose_calibration(measured),
        "gate_on_lfw_originals": gate_on_originals,
        "score_auc_success": _auc_of_success(scores, success),
    }


def plot_quality(path: Path, report: dict[str, Any], *, title: str) -> None:
    """Four panels (size, sharpness, yaw, pitch): TAR against the measured value, the target
    as a dotted line and the chosen threshold as a red one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    target = report["tar_target"]
    chosen = report["thresholds"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), dpi=110)
    try:
        for ax, key, label, limit, ticks in (
            (
                axes[0, 0],
                "size",
                "face size (box's shorter side, px)",
                "min_face_size_px",
                (16, 20, 28, 40, 64, 100),
            ),
            (
                axes[0, 1],
                "sharpness",
                f"sharpness (var. of Laplacian at {SHARPNESS_SIZE} px)",
                "min_sharpness",
                (50, 100, 200, 500, 1000, 2000),
            ),
        ):
            rows = [r for r in report[key]["curve"] if r["value_median"] is not None]
            x = [r["value_median"] for r in rows]
            ax.plot(x, [r["tar"] for r in rows], "o-", color="tab:blue", label="TAR (faces found)")
            ax.plot(x, [r["found"] for r in rows], "s:", color="tab:grey", ms=3, label="found")
            for r in rows:
                tag = "orig" if r["level"] == 0 else f"{r['level']:g}"
                ax.annotate(
                    tag,
                    (r["value_median"], r["tar"]),
                    fontsize=7,
                    xytext=(3, -9),
                    textcoords="offset points",
                )
            ax.set_xscale("log")
            ax.set_xticks(ticks)
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(f"{label}; level beside each point")
            ax.axvline(chosen[limit], color="tab:red", lw=1.5, label=f"threshold {chosen[limit]:g}")
        for ax, key, limit in (
            (axes[1, 0], "yaw", "max_yaw_deg"),
            (axes[1, 1], "pitch", "max_pitch_deg"),
        ):
            rows = report[key]["curve"]
            centres = [(r["from_deg"] + r["to_deg"]) / 2 for r in rows]
            ax.plot(centres, [r["tar"] for r in rows], "-", color="tab:blue")
            thin = [r["comparisons"] < MIN_BIN_PAIRS for r in rows]
            for hollow, legend in ((False, "TAR"), (True, f"TAR, < {MIN_BIN_PAIRS} comparisons")):
                ax.plot(
                    [c for c, t in zip(centres, thin, strict=True) if t == hollow],
                    [r["tar"] for r, t in zip(rows, thin, strict=True) if t == hollow],
                    "o",
                    color="tab:blue",
                    mfc="white" if hollow else "tab:blue",
                    label=legend,
                )
            ax.plot(
                centres,
                [r["similarity_median"] for r in rows],
                "^--",
                color="tab:green",
                ms=4,
                label="median similarity",
            )
            for c, r in zip(centres, rows, strict=True):
                ax.annotate(
                    str(r["comparisons"]),
                    (c, r["tar"]),
                    fontsize=7,
                    xytext=(-4, 5),
                    textcoords="offset points",
                )
            ax.set_xlabel(f"|{key}| of the enrolled photo (degrees, 5-degree bins; n above)")
            ax.axvline(chosen[limit], color="tab:red", lw=1.5, label=f"threshold {chosen[limit]:g}")
        for ax in axes.flat:
            ax.axhline(target, color="grey", ls=":", lw=1)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel(f"TAR at cosine >= {report['match_threshold']:g}; share; cosine")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower left")
        save_figure(fig, path, title=title)
    finally:
        plt.close(fig)
