"""Face embedding models (FaceNet-style frozen graphs)."""
