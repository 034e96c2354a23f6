"""Landmark models: MediaPipe's 468-point face mesh."""
