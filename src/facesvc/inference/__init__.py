"""Model registry, runners and the face pipeline. TensorFlow is imported lazily in here."""
