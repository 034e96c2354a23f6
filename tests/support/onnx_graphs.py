"""Small ONNX graphs built in the tests for the slots an operator fills with a model of their
own (no such model ships in a package registry): an ArcFace-shaped embedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def build_embedder(
    path: Path, *, dim: int = 512, batch: int | None = None, size: int = 112
) -> None:
    """``input`` (N, 3, size, size) float32 -> ``embedding`` (N, dim): 4x4 average pooling,
    the mean taken out, a fixed random projection. It tells faces apart only weakly (pixels,
    not identity), but it is an ONNX model with ArcFace's input and output shapes, run by ONNX
    Runtime exactly as a licensed one would be. ``batch=1``: exported with a fixed batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cells = size // 4
    projection = np.random.default_rng(11).standard_normal((3 * cells * cells, dim))
    n: int | str = batch or "N"
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [n, 3, size, size])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [n, dim])
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("ReduceMean", ["flat", "axes"], ["mean"], keepdims=1),
        helper.make_node("Sub", ["flat", "mean"], ["centred"]),
        helper.make_node("MatMul", ["centred", "projection"], ["embedding"]),
    ]
    initializers = [
        numpy_helper.from_array(projection.astype(np.float32), "projection"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
    ]
    graph = helper.make_graph(nodes, "toy_arcface", [x], [y], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
