"""One liveness frame through the service's pipeline: decode -> detect -> mesh -> embed.

The API and ``facesvc eval liveness`` both reduce a frame to a ``FrameObservation`` here, so
the evaluation measures exactly what the service decides on.
"""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np

from facesvc.inference.landmarks.signals import face_signals
from facesvc.inference.pipeline import FacePipeline
from facesvc.services.liveness.checker import FrameObservation


def image_digest(image: np.ndarray) -> str:
    """What identifies a frame across sessions: the sha256 (hex) of its decoded pixels, so
    bytes added to the file or other metadata do not make a replayed frame new (re-encoding
    does: the random challenge order is what stops a replay, this only catches the lazy one)."""
    digest = hashlib.sha256(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


async def observe_frame(
    pipeline: FacePipeline, data: bytes, *, replayed: bool = False
) -> FrameObservation:
    """How many faces the frame holds, and the largest one's mesh signals and embedding.

    With several faces the largest is still measured (the result shows it), though the
    checker fails the session on the count. ``replayed``: the caller found the digest in
    another session. Raises what ``decode_image`` raises for a bad upload.
    """
    image = await pipeline.decode(data)
    digest = await asyncio.to_thread(image_digest, image)  # ~1 ms a megapixel
    detections = await pipeline.detect(image)  # largest first
    if not detections:
        return FrameObservation(
            faces=0, signals=None, embedding=None, digest=digest, replayed=replayed
        )
    faces = await pipeline.landmarks(image, detections[:1], dense=True)
    (face,) = await pipeline.embed(image, faces)
    if face.mesh is None:  # unreachable: dense landmarks carry the mesh
        raise RuntimeError("the face has no mesh")
    live = await pipeline.live_scores(image, [face])  # None unless an antispoof model is set
    return FrameObservation(
        faces=len(detections),
        signals=face_signals(face.mesh),
        embedding=face.embedding,
        digest=digest,
        replayed=replayed,
        live_score=live[0] if live else None,
    )
