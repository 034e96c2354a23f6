"""FACESVC_DEVICE reaches the models: each TensorFlow model runs on this worker's device,
worker i of N taking device i mod n, and a device that is not there is refused.

Without a GPU this is checked on the CPU split into logical devices (/CPU:0, /CPU:1, through
FACESVC_CPU_LOGICAL_DEVICES), which the same code resolves and pins as it does GPUs. TensorFlow
fixes its devices once per process, so each check runs in a fresh Python process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from facesvc.inference.devices import DeviceError, pick_device
from facesvc.inference.registry import GPU_EMBEDDER, ModelRegistry
from facesvc.settings import Settings

# Builds one registry per (worker index, FACESVC_DEVICE) in one process, runs the TF graph
# FaceNet once on each, and prints where every model runs and where its output was placed.
PLACEMENT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    from facesvc.inference.registry import ModelRegistry
    from facesvc.settings import Settings
    out = []
    for worker, device in json.loads(sys.argv[1]):
        os.environ["FACESVC_WORKER_INDEX"] = str(worker)
        registry = ModelRegistry(Settings(device=device))
        try:
            registry.start_sync()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            out.append({"worker": worker, "device": device, "error": error})
            continue
        registry.embedder.run_sync(np.zeros((2, 160, 160, 3), np.uint8))
        out.append({"worker": worker, "device": device,
                    "models": [vars(m) for m in registry.info()]})
        registry.close()
    print("RESULT " + json.dumps(out))
    """
)


def placements(cases: list[tuple[int, str]], logical_cpus: int = 2) -> list[dict[str, Any]]:
    env = {
        **os.environ,
        "FACESVC_CPU_LOGICAL_DEVICES": str(logical_cpus),
        "FACESVC_EMBEDDER": "facenet",  # the TF graph: TFLite has no device but the CPU
    }
    done = subprocess.run(
        [sys.executable, "-c", PLACEMENT, json.dumps(cases)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result: list[dict[str, Any]] = json.loads(line.removeprefix("RESULT "))
    return result


def test_each_worker_runs_its_tensorflow_models_on_device_i_mod_n() -> None:
    results = placements([(0, "cpu"), (3, "cpu"), (0, "cpu:1")])
    expected = ["/CPU:0", "/CPU:1", "/CPU:1"]  # worker 0 -> 0, worker 3 -> 3 mod 2, pinned
    for result, device in zip(results, expected, strict=True):
        models = {m["task"]: m for m in result["models"]}
        assert models["embedder"]["device"] == device, result
        # the ops really ran there: the output tensor's device, not only the setting
        assert models["embedder"]["placed_on"].endswith("device:CPU:" + device[-1]), result
        # TFLite models stay on the CPU's first device whatever the setting
        assert models["detector"]["device"] == models["mesh"]["device"] == "/CPU:0"


def test_a_device_that_is_not_there_is_refused() -> None:
    results = placements([(0, "cpu:2"), (0, "gpu"), (1, "gpu:0")])
    assert [r.get("error") for r in results] == [
        "DeviceError: FACESVC_DEVICE=cpu:2 but TensorFlow sees 2 CPU(s); "
        "FACESVC_CPU_LOGICAL_DEVICES splits the CPU into more",
        "DeviceError: FACESVC_DEVICE=gpu but TensorFlow sees 0 GPU(s); use 'cpu' or a GPU "
        "build of TensorFlow with the CUDA libraries installed",
        "DeviceError: FACESVC_DEVICE=gpu:0 but TensorFlow sees 0 GPU(s); use 'cpu' or a GPU "
        "build of TensorFlow with the CUDA libraries installed",
    ]


def test_device_choice_is_one_rule_for_every_kind() -> None:
    assert [pick_device("gpu", 2, w) for w in range(5)] == [0, 1, 0, 1, 0]
    assert [pick_device("cpu", 3, w) for w in range(4)] == [0, 1, 2, 0]
    assert [pick_device("cpu:1", 2, w) for w in range(3)] == [1, 1, 1]
    with pytest.raises(DeviceError, match="sees 1 CPU"):
        pick_device("cpu:1", 1, 0)


def test_a_gpu_loads_the_tensorflow_embedder_unless_one_is_chosen() -> None:
    assert ModelRegistry(Settings(device="gpu")).embedder_spec.name == GPU_EMBEDDER
    assert ModelRegistry(Settings(device="gpu:1")).embedder_spec.name == GPU_EMBEDDER
    chosen = ModelRegistry(Settings(device="gpu", embedder="facenet-tflite"))
    assert chosen.embedder_spec.name == "facenet-tflite"
    # a .env restating the default embedder still gets the GPU graph
    restated = ModelRegistry(Settings(device="gpu", embedder=Settings().embedder))
    assert restated.embedder_spec.name == GPU_EMBEDDER
    cpu = ModelRegistry(Settings(cpu_runtime="tflite"))
    assert cpu.embedder_spec.name == Settings().embedder


def test_this_tensorflow_has_no_tensorrt() -> None:
    """README says TF-TRT cannot be offered: TensorFlow's wheels dropped TensorRT after 2.17
    ("TensorRT support is disabled in CUDA builds", 2.18). Should a wheel bring it back, this
    fails, and the TF-TRT opt-in for the GPU FaceNet graph becomes worth building."""
    from tensorflow.python.platform import build_info

    assert build_info.build_info.get("is_tensorrt_build") is False
