"""Loading TF1-style frozen GraphDefs (the seed tutorial's format) as callable functions."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def load_frozen_graph(
    path: Path, inputs: Sequence[str], outputs: Sequence[str]
) -> Callable[..., list[Any]]:
    """A pruned concrete function: call it with input tensors in ``inputs`` order, get the
    ``outputs`` tensors back as a list. Tensor names look like ``input:0``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())

    def _import() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    graph = wrapped.graph
    try:
        feeds = [graph.get_tensor_by_name(name) for name in inputs]
        fetches = [graph.get_tensor_by_name(name) for name in outputs]
    except KeyError as exc:
        raise ValueError(f"{path.name}: {exc.args[0]}") from exc
    pruned = wrapped.prune(feeds=feeds, fetches=fetches)

    def call(*tensors: Any) -> list[Any]:
        return list(pruned(*tensors))

    return call
