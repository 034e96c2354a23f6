"""Face detectors: BlazeFace (TFLite), MTCNN (TensorFlow), SSD frozen graphs."""
