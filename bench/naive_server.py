"""The baseline facesvc replaces, built the seed tutorial's way, for side-by-side benches.

One process, one thread, one model session: every request is decoded, detected and
embedded on its own (no batching), and requests wait for each other. It uses the models
and pipeline code facesvc is configured with (``FACESVC_EMBEDDER=facenet`` gives the
tutorial's frozen TF graph; the default is facesvc's TFLite FaceNet), so a comparison with
the same models measures the serving design only.

    .venv/bin/python bench/naive_server.py --port 8765

Routes: POST /face_register?name=... (body: image bytes) stores one embedding per name in
memory; POST /face_login?name=... answers {"match", "similarity"}.
"""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

import numpy as np

from facesvc.inference.geometry import face_crop, resize_longest
from facesvc.inference.images import decode_image
from facesvc.inference.registry import ModelRegistry
from facesvc.settings import Settings


class NaiveApp:
    def __init__(self) -> None:
        self.settings = Settings()
        self.registry = ModelRegistry(self.settings)
        self.registry.start_sync()
        self.threshold = self.registry.threshold
        self.gallery: dict[str, np.ndarray] = {}

    def embed(self, data: bytes) -> np.ndarray | None:
        """detect -> crop -> embed, one model call each, nothing shared (the same model work
        facesvc does for a verification: it skips the mesh too)."""
        reg = self.registry
        image = decode_image(data, max_pixels=self.settings.max_image_pixels)
        small, scale = resize_longest(image, self.settings.detection_max_side)
        (detections,) = reg.detector.run_sync([small])
        if not detections:
            return None
        largest = max(detections, key=lambda d: d.box.area)
        box = largest.box.scaled(1.0 / scale)
        crop = face_crop(image, box, reg.crop_policy, reg.embedder_input_size)
        vector: np.ndarray = reg.embedder.run_sync(crop[None])[0]
        return vector

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        name = query.get("name", [""])[0]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(length)
        path = environ["PATH_INFO"]
        status, body = "404 Not Found", {"error": "not found"}
        if path == "/model_cpu":  # for benches: CPU seconds of the model calls so far
            status = "200 OK"
            body = {"seconds": sum(runner.cpu_seconds for runner in self.registry.runners)}
        if path in ("/face_register", "/face_login") and environ["REQUEST_METHOD"] == "POST":
            vector = self.embed(data)
            if vector is None:
                status, body = "422 Unprocessable Entity", {"error": "no face"}
            elif path == "/face_register":
                self.gallery[name] = vector
                status, body = "200 OK", {"registered": name}
            elif name not in self.gallery:
                status, body = "404 Not Found", {"error": "unknown name"}
            else:
                similarity = float(self.gallery[name] @ vector)
                status, body = (
                    "200 OK",
                    {"match": similarity >= self.threshold, "similarity": similarity},
                )
        payload = json.dumps(body).encode()
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        )
        return [payload]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    app = NaiveApp()
    with make_server("127.0.0.1", args.port, app, handler_class=QuietHandler) as server:
        print(f"naive baseline ready on 127.0.0.1:{args.port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
