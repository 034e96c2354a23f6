"""The CPU runtimes behind the models, each with the same call shape (a tensor in, arrays
out): tflite (TFLite / LiteRT), openvino (OpenVINO's CPU plugin), onnx (ONNX Runtime); and
choice: which manifest variant this CPU loads (FACESVC_CPU_RUNTIME), whose names are
importable from here."""

from facesvc.inference.runtimes.choice import (
    CPU_FAMILIES,
    Choice,
    CpuRuntime,
    choose_variant,
    cpu_family,
    cpu_flags,
    cpu_model,
    runtime_available,
    speed_flags,
)

__all__ = [
    "CPU_FAMILIES",
    "Choice",
    "CpuRuntime",
    "choose_variant",
    "cpu_family",
    "cpu_flags",
    "cpu_model",
    "runtime_available",
    "speed_flags",
]
