"""Match decisions: the thresholds for 1:1 and 1:N, and what a score means."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from facesvc.errors import NotCalibratedError
from facesvc.inference.calibration import ScoreCalibration
from facesvc.settings import Settings

if TYPE_CHECKING:
    from facesvc.inference.registry import ModelRegistry


@dataclass(frozen=True)
class DecisionPolicy:
    """Thresholds, match probabilities and expected false-match rates, from the embedder's
    score calibration (``facesvc eval calibrate`` on LFW) when the manifest has one.

    ``threshold`` (manifest or FACESVC_MATCH_THRESHOLD) is the floor of every decision and
    ``compare``'s default. Verification is authentication: its default is the calibrated
    threshold for ``verify_far`` (FACESVC_VERIFY_FAR, 1e-3: NIST SP 800-63B 5.2.3), never below
    the floor. 1:N against N faces needs a higher threshold for the same risk (any of N
    impostors may pass): it is the calibrated threshold for ``identify_far`` at the tenant's
    gallery size, never below the floor. A request's ``far`` can only make a decision
    stricter than its default."""

    threshold: float
    calibration: ScoreCalibration | None = None
    identify_far: float = 0.01
    verify_far: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings, registry: ModelRegistry) -> DecisionPolicy:
        """The floor and the calibration are the loaded embedder's (``registry.threshold``
        raises ModelFileError for an embedder with neither a threshold nor a calibration)."""
        return cls(
            registry.threshold,
            registry.calibration,
            identify_far=settings.identify_far,
            verify_far=settings.verify_far,
        )

    def _calibrated(self) -> ScoreCalibration:
        if self.calibration is None:
            raise NotCalibratedError(
                "this embedder has no score calibration in the manifest, so a `far` target "
                "cannot be turned into a threshold"
            )
        return self.calibration

    def one_to_one(self, far: float | None) -> float:
        """``compare``'s threshold: the floor, or stricter for a request's ``far``."""
        if far is None:
            return self.threshold
        return max(self.threshold, self._calibrated().threshold_for_far(far))

    @functools.cached_property
    def verify_default(self) -> float:
        """Verify's default threshold: at most ``verify_far`` false matches, never below the
        floor (the floor without a calibration). Read off the calibration once per policy."""
        if self.verify_far is None or self.calibration is None:
            return self.threshold
        return max(self.threshold, self.calibration.threshold_for_far(self.verify_far))

    def verification(self, far: float | None) -> float:
        """Verify's threshold: ``verify_default``, or stricter for a request's ``far``."""
        if far is None:
            return self.verify_default
        return max(self.verify_default, self._calibrated().threshold_for_far(far))

    def one_to_many(self, gallery_faces: int, far: float | None) -> float:
        if far is not None:
            calibrated = self._calibrated().identification_threshold(max(1, gallery_faces), far)
            return max(self.one_to_many(gallery_faces, None), calibrated)
        if self.calibration is None:
            return self.threshold
        calibrated = self.calibration.identification_threshold(
            max(1, gallery_faces), self.identify_far
        )
        return max(self.threshold, calibrated)

    def probability(self, similarity: float | None) -> float | None:
        if similarity is None or self.calibration is None:
            return None
        return self.calibration.probability(similarity)

    def false_match_rate(self, threshold: float, gallery_faces: int = 1) -> float | None:
        if self.calibration is None:
            return None
        return self.calibration.expected_false_match_rate(threshold, max(1, gallery_faces))
