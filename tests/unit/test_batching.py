"""The micro-batching component: ordering, batch formation, bounded queue, error isolation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from facesvc.errors import QueueFullError
from facesvc.inference.batching import (
    ArrayBatching,
    BatchPolicy,
    ListBatching,
    MicroBatcher,
    ModelOutputError,
)
from facesvc.inference.registry import ModelRegistry
from facesvc.inference.runner import ModelRunner
from facesvc.settings import Settings
from tests.support.gates import eventually, gated


class SlowDoubler:
    """A stand-in model call: doubles its input after a delay; refuses negative values."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.calls: list[int] = []

    async def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(int(batch.shape[0]))
        await asyncio.sleep(self.delay)
        if (batch < 0).any():
            raise ValueError("negative input")
        return batch * 2


def make(call: SlowDoubler, **policy: float) -> MicroBatcher[np.ndarray, np.ndarray]:
    return MicroBatcher(
        "test",
        call,
        size=ArrayBatching.size,
        merge=ArrayBatching.merge,
        split=ArrayBatching.split,
        output_size=ArrayBatching.output_size,
        policy=BatchPolicy(**policy),  # type: ignore[arg-type]
    )


async def test_each_caller_gets_its_own_rows_in_order() -> None:
    call = SlowDoubler()
    batcher = make(call, max_batch=64)
    inputs = [
        np.arange(n, n + k, dtype=np.float32).reshape(k, 1)
        for n, k in [(0, 1), (10, 3), (20, 2), (30, 1)] * 5
    ]
    outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs))
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(y, x * 2)
    assert len(call.calls) < len(inputs), "concurrent requests were merged"
    await batcher.close()


async def test_batches_never_exceed_max_batch() -> None:
    call = SlowDoubler()
    batcher = make(call, max_batch=4)
    await asyncio.gather(*(batcher.submit(np.ones((1, 1), np.float32)) for _ in range(20)))
    assert max(call.calls) <= 4
    assert sum(call.calls) == 20
    await batcher.close()


async def test_idle_model_runs_at_once_and_max_wait_gathers() -> None:
    call = SlowDoubler(delay=0.0)
    batcher = make(call, max_batch=8, max_wait=0.5)  # wide margin: CI machines are busy

    async def later(delay: float) -> np.ndarray:
        await asyncio.sleep(delay)
        return await batcher.submit(np.ones((1, 1), np.float32))

    await asyncio.gather(later(0.0), later(0.02), later(0.04))
    assert call.calls == [3], "max_wait let one batch form"
    await batcher.close()


async def test_queue_is_bounded_and_fails_fast() -> None:
    call = SlowDoubler(delay=0.2)
    batcher = make(call, max_batch=2, max_queue=4)
    tasks = [asyncio.ensure_future(batcher.submit(np.ones((1, 1), np.float32))) for _ in range(12)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    refused = [r for r in results if isinstance(r, QueueFullError)]
    served = [r for r in results if isinstance(r, np.ndarray)]
    assert refused, "excess requests are refused"
    assert len(served) >= 4
    assert len(served) + len(refused) == 12
    assert batcher.queued_items == 0
    await batcher.close()


async def test_one_bad_input_fails_only_its_caller() -> None:
    call = SlowDoubler()
    batcher = make(call, max_batch=16)
    good = [np.full((1, 1), i, np.float32) for i in range(1, 6)]
    bad = np.full((1, 1), -1, np.float32)
    results = await asyncio.gather(
        *(batcher.submit(x) for x in [*good[:2], bad, *good[2:]]), return_exceptions=True
    )
    assert isinstance(results[2], ValueError)
    for x, y in zip(good, [r for i, r in enumerate(results) if i != 2], strict=True):
        np.testing.assert_array_equal(y, x * 2)
    await batcher.close()


async def test_cancelled_callers_are_skipped() -> None:
    call = SlowDoubler(delay=0.05)
    batcher = make(call, max_batch=1)
    first = asyncio.ensure_future(batcher.submit(np.ones((1, 1), np.float32)))
    await asyncio.sleep(0.01)  # first is running
    doomed = asyncio.ensure_future(batcher.submit(np.full((1, 1), 7, np.float32)))
    await asyncio.sleep(0)
    doomed.cancel()
    await first
    await asyncio.sleep(0.1)
    assert call.calls == [1], "the cancelled request was never computed"
    await batcher.close()


async def test_close_fails_waiting_callers() -> None:
    call = SlowDoubler(delay=0.2)
    batcher = make(call, max_batch=1)
    first = asyncio.ensure_future(batcher.submit(np.ones((1, 1), np.float32)))
    waiting = asyncio.ensure_future(batcher.submit(np.ones((1, 1), np.float32)))
    await asyncio.sleep(0.01)
    await batcher.close()
    with pytest.raises(RuntimeError, match="shut down"):
        await waiting
    first.cancel()


def test_list_batching_round_trips() -> None:
    merged = ListBatching.merge([[1, 2], [3], [4, 5, 6]])
    assert merged == [1, 2, 3, 4, 5, 6]
    assert ListBatching.split(merged, [2, 1, 3]) == [[1, 2], [3], [4, 5, 6]]
    parts = ArrayBatching.split(np.arange(6), [1, 5])
    assert [p.tolist() for p in parts] == [[0], [1, 2, 3, 4, 5]]


class _BusyModel:
    """Burns ``cpu`` seconds of its thread's CPU time, then sleeps ``idle`` seconds."""

    def __init__(self, cpu: float, idle: float) -> None:
        self.cpu, self.idle = cpu, idle

    def predict(self, batch: np.ndarray) -> np.ndarray:
        start = time.thread_time()
        while time.thread_time() - start < self.cpu:
            pass
        time.sleep(self.idle)
        return batch


@pytest.mark.parametrize(("cpu", "idle"), [(0.05, 0.0), (0.0, 0.2)])
async def test_runner_counts_its_models_cpu_time_not_wall_time(cpu: float, idle: float) -> None:
    runner: ModelRunner[np.ndarray, np.ndarray] = ModelRunner("busy", "/CPU:0", ArrayBatching())
    calls: list[tuple[str, int, float, float]] = []
    runner.on_call = lambda *observed: calls.append(observed)
    await runner.start(lambda: _BusyModel(0.0, 0.0), np.zeros((1, 2)))
    runner._model = _BusyModel(cpu, idle)
    try:
        await runner.run(np.zeros((3, 2)))
    finally:
        await runner.aclose()
        runner.close()
    ((name, items, wall, used),) = calls
    assert (name, items) == ("busy", 3)
    assert runner.cpu_seconds == used
    assert used >= cpu  # all of it, even when the other core is busy
    assert used < cpu + 0.1  # and not the sleep: a sleeping model costs no CPU
    assert wall >= cpu + idle


class _MiscountingModel:
    """Gives its input back one item short (``extra`` -1) or one item over (+1)."""

    def __init__(self, batching: ArrayBatching | ListBatching, extra: int) -> None:
        self.batching, self.extra = batching, extra

    def predict(self, batch: Any) -> Any:
        if self.extra < 0:
            return batch[: len(batch) + self.extra]
        return self.batching.merge([batch, batch[: self.extra]])


@pytest.mark.parametrize("extra", [-1, 1])
@pytest.mark.parametrize("batching", [ListBatching(), ArrayBatching()], ids=["list", "array"])
async def test_a_model_that_miscounts_its_outputs_fails_every_caller_of_the_call(
    batching: ArrayBatching | ListBatching, extra: int
) -> None:
    def items(*values: int) -> Any:
        return list(values) if isinstance(batching, ListBatching) else np.array(values)

    # max_batch 4: the three callers' 4 items make one call at once
    policy = BatchPolicy(max_batch=4, max_wait=0.5)
    runner: ModelRunner[Any, Any] = ModelRunner("miscount", "/CPU:0", batching, policy)
    await runner.start(lambda: _MiscountingModel(batching, extra), items(0))
    try:
        results = await asyncio.gather(
            runner.run(items(1)),
            runner.run(items(2, 3)),
            runner.run(items(4)),
            return_exceptions=True,
        )
        assert runner.calls == 1, "one merged call, not retried caller by caller"
        for result in results:
            assert isinstance(result, ModelOutputError), result
            assert str(result) == (
                f"model 'miscount' returned {4 + extra} outputs for a batch of 4 inputs"
            )
        with pytest.raises(
            ModelOutputError, match=f"returned {2 + extra} outputs for a batch of 2"
        ):
            await runner.run(items(5, 6))  # alone, too
    finally:
        await runner.aclose()
        runner.close()


class _Echo:
    def predict(self, batch: np.ndarray) -> np.ndarray:
        return batch


async def test_a_full_queue_refuses_at_once_while_the_model_is_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One item may wait per model: with the model held at a gate, the first item is in its
    call, the second waits, the third is refused at once, naming the model. Held, not raced:
    the order does not depend on how fast the model is."""
    policy = BatchPolicy(max_batch=1, max_queue=1)
    runner: ModelRunner[np.ndarray, np.ndarray] = ModelRunner(
        "held", "/CPU:0", ArrayBatching(), policy
    )
    await runner.start(_Echo, np.zeros((1, 2)))
    item = np.ones((1, 2))
    try:
        with gated(runner, monkeypatch) as gate:
            first = asyncio.ensure_future(runner.run(item))
            await eventually(lambda: gate.entered == 1, "the first item in the model")
            second = asyncio.ensure_future(runner.run(item))
            await eventually(lambda: runner.queued_items == 1, "the second item queued")
            with pytest.raises(QueueFullError) as refused:
                await runner.run(item)
        accepted = await asyncio.gather(first, second)
    finally:
        await runner.aclose()
        runner.close()
    assert (refused.value.name, refused.value.limit) == ("held", 1)
    assert [a.tolist() for a in accepted] == [item.tolist(), item.tolist()]


def test_the_queue_and_batch_settings_reach_every_runner() -> None:
    """FACESVC_QUEUE_MAX_ITEMS, _BATCH_MAX_SIZE and _BATCH_MAX_WAIT_MS are each runner's policy
    (the registry is built, no model loaded)."""
    settings = Settings(queue_max_items=1, batch_max_size=1, batch_max_wait_ms=7)
    registry = ModelRegistry(settings)
    assert {runner.policy for runner in registry.runners} == {
        BatchPolicy(max_batch=1, max_wait=0.007, max_queue=1)
    }
