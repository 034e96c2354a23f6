"""Face detection recall and precision on dlib's labelled photos (imglab XML, IoU >= 0.5).

Detections are matched greedily, most confident first, each to the unmatched labelled box it
overlaps most; a match needs IoU >= ``min_iou``. A detection that matches no labelled box but
overlaps a box marked ``ignore='1'`` is neither right nor wrong; any other is a false positive.
Photos in the folder without labels (``dogs.jpg`` holds no human face) are reported on their
own: every face found in ``dogs.jpg`` is a false positive.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facesvc.evaluation.boxes import iou
from facesvc.evaluation.progress import ProgressReporter
from facesvc.evaluation.provenance import describe
from facesvc.inference.pipeline import FacePipeline
from facesvc.inference.types import Box

NO_FACE_IMAGES = ("dogs.jpg",)


@dataclass(frozen=True)
class LabelledImage:
    file: str
    boxes: tuple[Box, ...]
    ignore: tuple[Box, ...] = ()


def parse_imglab(text: str) -> list[LabelledImage]:
    """``<image file='...'><box top left width height [ignore='1']/>...</image>`` entries."""
    # S314: the XML is a data file of this project's evaluation set, not user input.
    root = ET.fromstring(text)  # noqa: S314
    images = []
    for node in root.iter("image"):
        boxes: list[Box] = []
        ignore: list[Box] = []
        for box in node.iter("box"):
            value = Box(
                float(box.attrib["left"]),
                float(box.attrib["top"]),
                float(box.attrib["width"]),
                float(box.attrib["height"]),
            )
            (ignore if box.attrib.get("ignore", "0") == "1" else boxes).append(value)
        images.append(LabelledImage(node.attrib["file"], tuple(boxes), tuple(ignore)))
    return images


@dataclass
class MatchCounts:
    labelled: int = 0
    true_positives: int = 0
    false_positives: int = 0
    ignored: int = 0
    # best IoU of each false positive with any labelled box: near 0.5 means a box-convention
    # disagreement, near 0 a detection where nobody is labelled
    false_positive_ious: list[float] = field(default_factory=list)

    def __iadd__(self, other: MatchCounts) -> MatchCounts:
        self.labelled += other.labelled
        self.true_positives += other.true_positives
        self.false_positives += other.false_positives
        self.ignored += other.ignored
        self.false_positive_ious += other.false_positive_ious
        return self

    @property
    def recall(self) -> float:
        return self.true_positives / self.labelled if self.labelled else 0.0

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0


def match_detections(
    detections: Sequence[tuple[Box, float]],
    truth: Sequence[Box],
    ignore: Sequence[Box] = (),
    min_iou: float = 0.5,
) -> MatchCounts:
    """Greedy one-to-one matching of (box, score) detections to labelled boxes."""
    counts = MatchCounts(labelled=len(truth))
    free = list(range(len(truth)))
    for box, _ in sorted(detections, key=lambda d: -d[1]):
        best, best_iou = -1, 0.0
        for index in free:
            overlap = iou(box, truth[index])
            if overlap > best_iou:
                best, best_iou = index, overlap
        if best >= 0 and best_iou >= min_iou:
            free.remove(best)
            counts.true_positives += 1
        elif any(iou(box, other) >= min_iou for other in ignore):
            counts.ignored += 1
        else:
            counts.false_positives += 1
            counts.false_positive_ious.append(max((iou(box, t) for t in truth), default=0.0))
    return counts


@dataclass
class DetectionRun:
    counts: MatchCounts = field(default_factory=MatchCounts)
    images: list[dict[str, object]] = field(default_factory=list)
    unlabelled: dict[str, int] = field(default_factory=dict)


async def run_detection(
    pipeline: FacePipeline,
    root: Path,
    labelled: Sequence[LabelledImage],
    unlabelled: Sequence[str],
    progress: Callable[[int], None] | None = None,
    *,
    min_iou: float = 0.5,
) -> dict[str, object]:
    """Detect faces in every photo with ``pipeline.detect`` (one at a time, for timings)."""
    run = DetectionRun()
    seconds: list[float] = []

    async def detect(name: str) -> list[tuple[Box, float]]:
        data = await asyncio.to_thread((root / name).read_bytes)
        start = time.perf_counter()
        image = await pipeline.decode(data)
        found = await pipeline.detect(image)
        seconds.append(time.perf_counter() - start)
        if progress:
            progress(1)
        return [(d.box, d.score) for d in found]

    for item in labelled:
        found = await detect(item.file)
        counts = match_detections(found, item.boxes, item.ignore, min_iou)
        run.counts += counts
        run.images.append(
            {
                "file": item.file,
                "labelled": counts.labelled,
                "ignored_labels": len(item.ignore),
                "detected": len(found),
                "true_positives": counts.true_positives,
                "false_positives": counts.false_positives,
                "missed": counts.labelled - counts.true_positives,
                "false_positive_ious": [round(v, 3) for v in counts.false_positive_ious],
            }
        )
    for name in unlabelled:
        run.unlabelled[name] = len(await detect(name))
    no_face = {name: run.unlabelled[name] for name in NO_FACE_IMAGES if name in run.unlabelled}
    return {
        "min_iou": min_iou,
        "labelled_images": len(labelled),
        "labelled_faces": run.counts.labelled,
        "true_positives": run.counts.true_positives,
        "false_positives": run.counts.false_positives,
        "ignored_detections": run.counts.ignored,
        "recall": run.counts.recall,
        "precision": run.counts.precision,
        "no_face_images": no_face,
        "no_face_images_ok": all(count == 0 for count in no_face.values()),
        "unlabelled_images": run.unlabelled,
        "per_image": run.images,
        "ms_per_image_median": (
            round(1000 * sorted(seconds)[len(seconds) // 2], 1) if seconds else None
        ),
    }


# ---- facesvc eval detect ---------------------------------------------------------------


def read_dlib_faces(root: Path) -> tuple[list[LabelledImage], list[str]]:
    """dlib's labelled photos (training.xml and testing.xml) and the unlabelled ones."""
    labelled = [
        image
        for name in ("training.xml", "testing.xml")
        for image in parse_imglab((root / name).read_text(encoding="iso-8859-1"))
    ]
    known = {image.file for image in labelled}
    return labelled, sorted(p.name for p in root.glob("*.jpg") if p.name not in known)


async def evaluate_detection(
    pipeline: FacePipeline,
    root: Path,
    labelled: Sequence[LabelledImage],
    unlabelled: Sequence[str],
    *,
    min_iou: float,
    command: str,
) -> dict[str, Any]:
    """Detection recall and precision on dlib's photos (``root``)."""
    with ProgressReporter("dlib photos", len(labelled) + len(unlabelled)) as progress:
        report = await run_detection(
            pipeline, root, labelled, unlabelled, progress.advance, min_iou=min_iou
        )
    return {**report, **describe(pipeline, command)}


def detection_summary_line(result: dict[str, Any]) -> str:
    return (
        f"recall {result['recall']:.4f}, precision {result['precision']:.4f} "
        f"({result['true_positives']} of {result['labelled_faces']} faces, "
        f"{result['false_positives']} false), dogs.jpg faces: "
        f"{result['no_face_images'].get('dogs.jpg')}"
    )
