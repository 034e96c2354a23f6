"""OpenVINO as a CPU runtime, beside TFLite: the same call shape as ``TFLiteModel``.

OpenVINO reads the service's ``.tflite`` files (and TF frozen graphs, ONNX) directly, and an
IR package (``.openvino.zip``: ``model.xml`` + ``model.bin`` in one file, so one sha256 covers
it and a pull replaces it atomically) for models it produced itself, such as the int8 FaceNet
that ``facesvc models pull`` quantises with NNCF. Precision is a compile-time hint: ``f32``
keeps every float op in fp32 (OpenVINO's CPU plugin would otherwise pick bf16 by itself on a
CPU with AMX or AVX512-BF16), ``bf16`` asks for bf16 where the CPU has it. An int8 IR runs its
quantised ops in int8 (VNNI/AMX) whatever the hint.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

Precision = Literal["f32", "bf16"]

IR_PACKAGE_SUFFIX = ".openvino.zip"


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def read_model(path: Path, core: Any = None) -> Any:
    """An ``openvino.Model`` from an IR package or any file OpenVINO reads itself."""
    import openvino as ov

    core = core or ov.Core()
    if path.name.endswith(IR_PACKAGE_SUFFIX):
        with zipfile.ZipFile(path) as package:
            xml = package.read("model.xml").decode("utf-8")
            weights = np.frombuffer(package.read("model.bin"), dtype=np.uint8)
        return core.read_model(model=xml, weights=ov.Tensor(weights))
    return core.read_model(str(path))


def save_ir_package(model: Any, target: Path) -> None:
    """Write ``model`` as one IR package file (see the module docstring)."""
    import tempfile

    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="facesvc-ov-") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as package:
            # fixed timestamps: the same model gives the same bytes
            for name in ("model.xml", "model.bin"):
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                package.writestr(info, (Path(tmp) / name).read_bytes())
        target.write_bytes(buffer.getvalue())


class OpenVINOModel:
    """One compiled model and its infer request (one per runner thread, like TFLiteModel).

    ``batch`` None makes the first input's batch dimension dynamic (embedders batch across
    requests); an int fixes it (a detector's single image)."""

    def __init__(
        self,
        path: Path,
        *,
        threads: int = 0,
        precision: Precision = "f32",
        batch: int | None = None,
    ) -> None:
        import openvino as ov

        core = ov.Core()
        model = read_model(path, core)
        first = model.inputs[0]
        shape = first.get_partial_shape()
        shape[0] = -1 if batch is None else batch
        model.reshape({first: shape})
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            # several workers share the cores: pinning threads to cores would stack them
            "ENABLE_CPU_PINNING": False,
        }
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, "CPU", config)
        self.precision = precision
        self._request = self.compiled.create_infer_request()
        self._shape = [d.get_length() if d.is_static else -1 for d in shape]
        self._outputs = list(self.compiled.outputs)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self._shape)

    def resize_batch(self, batch: int) -> None:
        """Nothing to do: the batch dimension is dynamic (or fixed by the caller)."""

    def output_by_last_dim(self, last_dim: int) -> int:
        for index, output in enumerate(self._outputs):
            shape = output.get_partial_shape()
            if shape[shape.rank.get_length() - 1].get_length() == last_dim:
                return index
        raise ValueError(f"model has no output with last dimension {last_dim}")

    def __call__(self, tensor: np.ndarray) -> dict[int, np.ndarray]:
        """Run one input; returns every output by index (copies, safe to keep)."""
        results = self._request.infer({0: tensor})
        return {i: np.array(results[output]) for i, output in enumerate(self._outputs)}
