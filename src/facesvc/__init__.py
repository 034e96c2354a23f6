"""facesvc: face detection, landmarks, embeddings, verification and identification over HTTP."""

__version__ = "0.1.0"
