"""LFW evaluation helpers: pair subsets, pair scores, ROC curve and plot, embedding cache,
progress lines without a terminal."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from facesvc.evaluation.cache import CachedFace, EmbeddingCache
from facesvc.evaluation.curves import CurveMark, plot_roc, roc_curve, score_summary
from facesvc.evaluation.lfw import (
    FAILED_PAIR_SCORE,
    Pair,
    pair_scores,
    rates_at,
    select_pairs,
    verification_report,
)
from facesvc.evaluation.progress import ProgressReporter


def fold_pairs(folds: int, per_side: int) -> list[Pair]:
    """pairs.txt's layout: per fold, its same pairs then its different pairs."""
    return [
        Pair(fold, f"{fold}-{same}-{i}-a", f"{fold}-{same}-{i}-b", same)
        for fold in range(folds)
        for same in (True, False)
        for i in range(per_side)
    ]


def test_select_pairs_limit_keeps_both_kinds_in_every_fold() -> None:
    pairs = fold_pairs(3, 5)
    chosen = select_pairs(pairs, folds=2, limit=5)
    assert {p.fold for p in chosen} == {0, 1}
    for fold in (0, 1):
        in_fold = [p for p in chosen if p.fold == fold]
        assert len(in_fold) == 5
        assert sum(p.same for p in in_fold) == 3  # the odd one goes to the same pairs
        # the first ones of each kind, in file order
        assert [p.a for p in in_fold if not p.same] == [f"{fold}-False-0-a", f"{fold}-False-1-a"]
    assert select_pairs(pairs, folds=3) == pairs


def test_pair_scores_count_failures_as_the_lowest_score() -> None:
    pairs = [Pair(0, "x", "y", True), Pair(0, "x", "z", False)]
    x = np.array([1.0, 0.0])
    y = np.array([0.6, 0.8])
    scores = pair_scores(pairs, {"x": x, "y": y, "z": None})
    np.testing.assert_allclose(scores, [0.6, FAILED_PAIR_SCORE])


def test_verification_report_lists_errors_and_rates() -> None:
    pairs = fold_pairs(2, 3)
    # fold 1 has a genuine pair at 0.05, below two impostors: an error at any best threshold
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.0, -0.1, 0.9, 0.8, 0.05, 0.1, 0.0, -0.1])
    report = verification_report(pairs, scores, manifest_threshold=0.5)
    assert report["pairs"] == 12
    assert report["at_manifest_threshold"] == {
        "threshold": 0.5,
        "accuracy": pytest.approx(11 / 12),
        "tar": pytest.approx(5 / 6),
        "far": 0.0,
    }
    errors = report["errors_at_best_threshold"]
    assert errors == [
        {"fold": 1, "a": "1-True-2-a", "b": "1-True-2-b", "same": True, "score": 0.05}
    ]
    assert 0.1 < report["threshold"] < 0.7  # type: ignore[operator]
    assert report["scores"]["genuine"]["count"] == 6  # type: ignore[index]
    assert report["scores"]["impostor"]["max"] == pytest.approx(0.1)  # type: ignore[index]


def test_rates_at_threshold() -> None:
    scores = np.array([0.9, 0.4, 0.5, 0.1])
    same = np.array([True, True, False, False])
    assert rates_at(scores, same, 0.45) == {
        "threshold": 0.45,
        "accuracy": 0.5,
        "tar": 0.5,
        "far": 0.5,
    }


def test_roc_curve_steps_through_distinct_scores() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.3, 0.2])
    same = np.array([True, True, False, True, False])
    far, tar, thresholds = roc_curve(scores, same)
    np.testing.assert_allclose(far, [0, 0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tar, [0, 1 / 3, 2 / 3, 1.0, 1.0])  # the 0.8 tie moves both
    np.testing.assert_allclose(thresholds[1:], [0.9, 0.8, 0.3, 0.2])
    assert np.all(np.diff(far) >= 0)
    assert np.all(np.diff(tar) >= 0)


def test_score_summary() -> None:
    summary = score_summary(np.arange(101, dtype=float))
    assert summary["count"] == 101
    assert summary["p50"] == 50.0
    assert summary["p99"] == 99.0
    assert summary["min"] == 0.0
    assert score_summary(np.zeros(0)) == {"count": 0}


def test_plot_roc_writes_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    same = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    scores = np.where(same, rng.normal(0.7, 0.15, 1000), rng.normal(0.05, 0.12, 1000))
    path = tmp_path / "eval" / "roc.png"
    plot_roc(path, scores, same, [CurveMark("threshold 0.4", far=0.01, tar=0.97)], title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cache_round_trip_is_keyed_by_pipeline(tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    other = tmp_path / "b.jpg"
    vector = np.array([0.6, 0.8], dtype=np.float32)
    with EmbeddingCache(tmp_path / "c.sqlite", "det-1", "emb-1", flush_every=1) as cache:
        cache.put(image, CachedFace(vector, 2))
        cache.put(other, CachedFace(None, 0))  # a failure to detect is remembered too
    with EmbeddingCache(tmp_path / "c.sqlite", "det-1", "emb-1") as cache:
        found = cache.get_many([image, other, tmp_path / "missing.jpg"])
    assert set(found) == {image, other}
    np.testing.assert_array_equal(found[image].embedding, vector)
    assert found[image].faces == 2
    assert found[other].embedding is None
    for detector, embedder in (("det-2", "emb-1"), ("det-1", "emb-2")):
        with EmbeddingCache(tmp_path / "c.sqlite", detector, embedder) as cache:
            assert cache.get_many([image, other]) == {}


def test_progress_prints_lines_without_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False)
    with ProgressReporter("embedding", 10, console=console, interval=0.0) as progress:
        assert not progress.interactive
        progress.advance(4)
        progress.advance(6)
    lines = out.getvalue().splitlines()
    assert "embedding: 10 to do" in lines[0]
    assert "4/10 (40%)" in lines[1]
    assert "10/10 (100%)" in lines[-1]


def test_progress_leaves_cache_hits_out_of_the_rate() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False)
    with ProgressReporter("embedding", 10, console=console, interval=3600) as progress:
        progress.skip(8)  # a cache answered these at once
        assert progress.done == 8
        line = progress.line(progress._start + 2.0)  # two seconds in, nothing computed
    assert "8/10 (80%)" in line
    assert "0.0/s" in line
