"""Identification (1:N) as the gallery grows, from the embedder's LFW score distributions.

The score calibration (``facesvc eval calibrate``) holds how often a genuine and an impostor
comparison reach each similarity (242,309 genuine and 87,307,219 impostor LFW pairs for
FaceNet-128). For a gallery of N faces and a probe, taking comparisons as independent:

- the 1:N threshold keeps an unknown person's false match at ``far`` (FPIR): one of N impostor
  scores passes with probability 1 - (1 - far1)^N, so far1 = 1 - (1 - far)^(1/N). Where far1 is
  below what the data resolves (one impostor pair in 87 million), the threshold stops rising and
  the FPIR promise is no longer kept: ``fpir`` says what it is then;
- DIR at that threshold (detection and identification rate, one enrolled photo per person): a
  genuine probe scores s >= threshold against its own photo AND every one of the N impostor
  faces scores below s: sum over s of P(genuine = s) * (1 - FAR(s))^N;
- rank-k (no threshold: what ``mode=review`` shows a reviewer): the own photo is among the k
  best: P(fewer than k of N impostors score above s), Poisson with mean N * FAR(s).

Beyond the data's resolution FAR(s) reads 0, so DIR and rank-k there are optimistic: the table
flags those rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from facesvc.inference.calibration import ScoreCalibration, per_comparison_far

DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)


def _rank_k_rate(n: int, k: int, genuine: np.ndarray, far: np.ndarray) -> float:
    """P(own photo among the k best of n + 1 scores): Poisson(n * FAR(s)) < k, weighted by the
    genuine score distribution."""
    mean = n * far
    below_k = np.zeros_like(mean)
    term = np.exp(-mean)
    for j in range(k):
        if j:
            term = term * mean / j
        below_k += term
    return float(np.sum(genuine * below_k))


def identification_at_scale(
    calibration: ScoreCalibration,
    one_to_one_threshold: float,
    far: float = 0.01,
    sizes: tuple[int, ...] = DEFAULT_SIZES,
) -> dict[str, Any]:
    grid = calibration.thresholds
    far_grid = calibration.far
    tar_grid = calibration.tar
    # genuine probability mass per grid bin [t_i, t_i+1)
    genuine = np.clip(tar_grid - np.append(tar_grid[1:], 0.0), 0.0, None)
    rows = []
    for n in sizes:
        far1 = per_comparison_far(far, n)
        threshold = max(one_to_one_threshold, calibration.identification_threshold(n, far))
        above = grid >= threshold - 1e-12
        no_impostor_above = np.exp(n * np.log1p(-np.minimum(far_grid, 1 - 1e-15)))
        rows.append(
            {
                "gallery_faces": n,
                "per_comparison_far": far1,
                "resolved": far1 >= calibration.min_far,
                "threshold": round(threshold, 4),
                "fpir": calibration.expected_false_match_rate(threshold, n),
                "tar_one_photo": calibration.tar_at(threshold),
                "dir_one_photo": float(np.sum(genuine[above] * no_impostor_above[above])),
                "rank1": _rank_k_rate(n, 1, genuine, far_grid),
                "rank10": _rank_k_rate(n, 10, genuine, far_grid),
            }
        )
    return {
        "what": "1:N threshold, FPIR and expected DIR by gallery size, from LFW score "
        "distributions (comparisons taken as independent; one enrolled photo per person)",
        "space": calibration.space,
        "fpir_target": far,
        "one_to_one_threshold": one_to_one_threshold,
        "genuine_pairs": calibration.n_genuine,
        "impostor_pairs": calibration.n_impostor,
        "min_far": calibration.min_far,
        "rows": rows,
    }


def scale_summary_line(result: dict[str, Any]) -> str:
    parts = []
    for row in result["rows"]:
        n = row["gallery_faces"]
        size = f"1e{round(math.log10(n))}" if n > 0 and math.log10(n).is_integer() else str(n)
        flag = "" if row["resolved"] else "*"
        dir_ = 100 * row["dir_one_photo"]
        parts.append(f"{size}: t={row['threshold']:.3f} DIR {dir_:.1f}%{flag}")
    return "identification at scale: " + ", ".join(parts) + " (*: beyond the data's resolution)"
