"""The calibration arithmetic: threshold search, 10-fold protocol, AUC, TAR at FAR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facesvc.evaluation.lfw import best_threshold, read_pairs, roc_auc, tar_at_far, ten_fold


def test_best_threshold_separates_separable_scores() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.0])
    same = np.array([True, True, True, False, False, False])
    threshold, accuracy = best_threshold(scores, same)
    assert accuracy == 1.0
    assert 0.2 < threshold < 0.7


def test_ten_fold_uses_other_folds_for_each_threshold() -> None:
    rng = np.random.default_rng(0)
    folds = np.repeat(np.arange(10), 100)
    same = np.tile(np.r_[np.ones(50, bool), np.zeros(50, bool)], 10)
    scores = np.where(same, rng.normal(0.7, 0.1, 1000), rng.normal(0.1, 0.1, 1000))
    result = ten_fold(scores, same, folds)
    assert len(result["fold_thresholds"]) == 10  # type: ignore[arg-type]
    assert 0.97 < result["accuracy_mean"] <= 1.0  # type: ignore[operator]
    assert 0.3 < result["threshold"] < 0.5  # type: ignore[operator]


def test_auc_and_tar_at_far() -> None:
    same = np.array([True] * 4 + [False] * 4)
    assert roc_auc(np.array([4, 5, 6, 7, 0, 1, 2, 3.0]), same) == 1.0
    assert roc_auc(np.array([0, 1, 2, 3, 4, 5, 6, 7.0]), same) == 0.0
    assert roc_auc(np.array([1, 1, 1, 1, 1, 1, 1, 1.0]), same) == pytest.approx(0.5)
    scores = np.array([0.9, 0.8, 0.5, 0.3, 0.6, 0.2, 0.1, 0.0])
    tar, threshold = tar_at_far(scores, same, 0.0)  # no impostor may pass
    assert threshold > 0.6
    assert tar == 0.5  # 0.9 and 0.8 pass
    tar, _ = tar_at_far(scores, same, 0.25)  # one impostor of four may pass
    assert tar == 1.0  # threshold just above 0.2: 0.6 passes, so do all genuine pairs


def test_read_pairs_parses_lfw_protocol(data_dir: Path) -> None:
    pairs = read_pairs(data_dir / "lfw" / "pairs.txt")
    assert len(pairs) == 6000
    assert sum(p.same for p in pairs) == 3000
    assert {p.fold for p in pairs} == set(range(10))
    assert (data_dir / "lfw" / "lfw-deepfunneled" / pairs[0].a).exists()
