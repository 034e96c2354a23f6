"""Tools for tests that must observe a request *while* it waits on a model, whatever the
machine's speed: hold a runner's model calls at a gate, and wait for a condition (never a
fixed sleep that assumes how long the work takes)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from facesvc.inference.runner import ModelRunner


class GatedModel:
    """Wraps a runner's loaded model: every call waits until the gate opens, and counts the
    items that reached the model (calls run on the runner's one thread)."""

    def __init__(self, model: Any, size: Callable[[Any], int]) -> None:
        self._model, self._size = model, size
        self.gate = threading.Event()
        self.entered = 0

    def predict(self, batch: Any) -> Any:
        self.entered += self._size(batch)
        if not self.gate.wait(timeout=120):
            raise TimeoutError("the test never opened the model gate")
        return self._model.predict(batch)


@contextmanager
def gated(
    runner: ModelRunner[Any, Any], monkeypatch: pytest.MonkeyPatch, *, open_at_first: bool = False
) -> Iterator[GatedModel]:
    """Holds ``runner``'s model calls until the block ends (or ``gate.set()``); with
    ``open_at_first`` calls pass until the test closes the gate (``gate.clear()``)."""
    gate = GatedModel(runner.model, runner.batching.size)
    if open_at_first:
        gate.gate.set()
    monkeypatch.setattr(runner, "_model", gate)
    try:
        yield gate
    finally:
        gate.gate.set()


def waiting_items(runner: ModelRunner[Any, Any], gate: GatedModel) -> int:
    """Items held at the gate or queued behind it."""
    return gate.entered + runner.queued_items


async def eventually(
    condition: Callable[[], bool], what: str, within: float = 60.0, interval: float = 0.005
) -> None:
    """Waits until ``condition()`` holds; fails with ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(interval)
