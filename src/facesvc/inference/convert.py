"""One-off conversions of the Keras FaceNet .h5 (run by ``models pull``, each in a child
process): a frozen graph, TFLite fp32/int8, an OpenVINO int8 IR package."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal


def keras_facenet_to_frozen_graph(h5_path: str, out_path: str, input_size: int = 160) -> None:
    """Freeze FaceNet with the seed tutorial's tensor names: ``input:0`` (prewhitened RGB
    batch), ``phase_train:0`` (ignored, kept for compatibility) and ``embeddings:0``
    (L2-normalised). A frozen graph runs about 1.5x faster here than a traced SavedModel."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    class ScaledResidual(keras.layers.Layer):  # type: ignore[misc]
        """Stands in for the file's 21 Lambda layers, whose marshalled Python 3.6 bytecode
        cannot run: each computes ``inputs[0] + inputs[1] * scale``."""

        def __init__(self, arguments: dict[str, Any] | None = None, **kwargs: Any) -> None:
            known = {k: v for k, v in kwargs.items() if k in ("name", "trainable", "dtype")}
            super().__init__(**known)
            self.scale = float((arguments or {}).get("scale", 1.0))

        def call(self, inputs: Any) -> Any:
            return inputs[0] + inputs[1] * self.scale

    model = keras.models.load_model(
        h5_path, custom_objects={"Lambda": ScaledResidual}, compile=False
    )
    scales = sorted({layer.scale for layer in model.layers if isinstance(layer, ScaledResidual)})
    if scales != [0.1, 0.17, 0.2, 1.0]:
        raise ValueError(f"unexpected residual scales {scales}: not the FaceNet Keras port")

    @tf.function(  # type: ignore[untyped-decorator]
        input_signature=[
            tf.TensorSpec([None, input_size, input_size, 3], tf.float32, name="input"),
            tf.TensorSpec([], tf.bool, name="phase_train"),
        ]
    )
    def serve(images: Any, phase_train: Any) -> Any:
        del phase_train
        raw = model(images, training=False)
        return tf.math.l2_normalize(raw, axis=1, name="embeddings")

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    graph_def = frozen.graph.as_graph_def()
    with open(out_path, "wb") as handle:
        handle.write(graph_def.SerializeToString(deterministic=True))


Quantisation = Literal["int8-dynamic", "int8-static", "fp16"]


def frozen_graph_to_tflite(
    pb_path: str,
    out_path: str,
    input_size: int = 160,
    quantisation: Quantisation | None = None,
    representative: Callable[[], Iterable[list[Any]]] | None = None,
) -> None:
    """FaceNet frozen graph -> TFLite (fp32). Freezing first matters: converting the Keras
    model directly gives NaNs. Runs with XNNPACK about 2.5x faster per face on a CPU.

    ``quantisation`` (post-training): "int8-dynamic" (int8 weights, activations quantised on
    the fly; no calibration data: the service's facenet-int8), "int8-static" (activations too,
    ranges from ``representative``: batches of prewhitened faces) or "fp16" (weights).
    bench/quantisation.py measures each against fp32 on all of LFW."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
        pb_path,
        input_arrays=["input"],
        output_arrays=["embeddings"],
        input_shapes={"input": [1, input_size, input_size, 3]},
    )
    if quantisation is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantisation == "int8-static":
        if representative is None:
            raise ValueError("static int8 needs representative faces")
        converter.representative_dataset = representative
    elif quantisation == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    with open(out_path, "wb") as handle:
        handle.write(converter.convert())


def keras_facenet_to_tflite(
    h5_path: str, out_path: str, input_size: int = 160, quantisation: Quantisation | None = None
) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="facesvc-convert-") as tmp:
        frozen = os.path.join(tmp, "facenet.pb")
        keras_facenet_to_frozen_graph(h5_path, frozen, input_size)
        frozen_graph_to_tflite(frozen, out_path, input_size, quantisation)


def keras_facenet_to_tflite_int8(h5_path: str, out_path: str, input_size: int = 160) -> None:
    keras_facenet_to_tflite(h5_path, out_path, input_size, "int8-dynamic")


def cuhk_calibration_faces(data_dir: str, count: int, input_size: int = 160) -> Any:
    """The first ``count`` labelled CUHK web faces (never LFW, which measures accuracy), cut
    by their labelled box as the service cuts a detected face: (N, S, S, 3) uint8 RGB."""
    import numpy as np

    from facesvc.inference.cuhk import read_cuhk
    from facesvc.inference.geometry import CropPolicy, face_crop
    from facesvc.inference.images import decode_image

    root = Path(data_dir) / "cuhk_5pt"
    listing = root / "testImageList.txt"
    if not listing.exists():
        raise FileNotFoundError(f"{listing} is missing: no calibration faces (FACESVC_DATA_DIR)")
    policy = CropPolicy(square=True, scale=1.2)
    crops = [
        face_crop(decode_image(path.read_bytes(), max_pixels=40_000_000), s.box, policy, input_size)
        for s in read_cuhk(listing)[:count]
        for path in [root / s.image]
    ]
    return np.stack(crops)


def keras_facenet_to_openvino_int8(
    h5_path: str, out_path: str, input_size: int, data_dir: str, count: int
) -> None:
    """FaceNet as an OpenVINO int8 IR package: Keras -> TFLite fp32 -> OpenVINO, then NNCF's
    post-training quantisation (mixed preset: symmetric weights, asymmetric activations; fast
    bias correction) on ``count`` prewhitened CUHK faces."""
    import tempfile

    import nncf
    import openvino as ov

    from facesvc.inference.embedders.facenet import prewhiten
    from facesvc.inference.runtimes.openvino import read_model, save_ir_package

    faces = cuhk_calibration_faces(data_dir, count, input_size)
    with tempfile.TemporaryDirectory(prefix="facesvc-convert-") as tmp:
        tflite = os.path.join(tmp, "facenet.tflite")
        keras_facenet_to_tflite(h5_path, tflite, input_size)
        model = read_model(Path(tflite))
    model.reshape({model.inputs[0]: ov.PartialShape([-1, input_size, input_size, 3])})
    dataset = nncf.Dataset([prewhiten(faces[i : i + 1]) for i in range(len(faces))])
    quantised = nncf.quantize(
        model, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=len(faces)
    )
    save_ir_package(quantised, Path(out_path))
