"""facesvc: face detection, landmarks, embeddings, verification and identification over HTTP."""

import os

__version__ = "0.1.0"

# OpenCV reads its decoder pixel limit once, when cv2 loads, so it must be in the environment
# before anything imports cv2: this package is imported first. A backstop behind the header
# check in facesvc.inference.images; it follows FACESVC_MAX_IMAGE_PIXELS when that is in the
# environment (40 MP, the setting's default, otherwise). An operator's own value wins.
# numpy's BLAS threads only slow the service's small matrix work (1:N search is memory-bound)
# and fight TensorFlow's own thread pools for the cores: one thread, unless the operator says.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
_pixels = os.environ.get("FACESVC_MAX_IMAGE_PIXELS", "").strip()
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", _pixels if _pixels.isdigit() else "40000000")
