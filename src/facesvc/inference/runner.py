"""A runner owns one model, one executor thread, one device and one micro-batching queue.

Calls never block the event loop: ``await runner.run(batch)`` queues the batch; the
runner's batcher merges what is queued into one ``predict`` call on the runner's thread
under ``tf.device(device)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

from facesvc.inference.batching import BatchPolicy, MicroBatcher

In = TypeVar("In")
Out = TypeVar("Out")
In_contra = TypeVar("In_contra", contravariant=True)
Out_co = TypeVar("Out_co", covariant=True)


class Predictor(Protocol[In_contra, Out_co]):
    def predict(self, batch: In_contra) -> Out_co: ...


class Batching(Protocol[In, Out]):
    """How a runner's batches are sized, merged and split (see batching.py)."""

    def size(self, batch: In, /) -> int: ...
    def merge(self, batches: Sequence[In], /) -> In: ...
    def split(self, output: Out, sizes: Sequence[int], /) -> list[Out]: ...
    def output_size(self, output: Out, /) -> int: ...


class ModelRunner(Generic[In, Out]):
    """Loads, warms and runs one model on its own thread (a TensorFlow one under
    ``tf.device(device)``).

    One thread per model keeps each TFLite interpreter and TF graph single-threaded from
    Python's side (TF still uses its intra-op pool), gives every model its own queue, and
    lets the models load in parallel at start-up.
    """

    def __init__(
        self,
        name: str,
        device: str,
        batching: Batching[In, Out],
        policy: BatchPolicy | None = None,
    ) -> None:
        self.name = name
        self.device = device
        # whether the model runs on TensorFlow (loaded and called under tf.device(device));
        # TFLite and ONNX models leave TensorFlow unimported (seconds and ~600 MB a worker)
        self.tensorflow = False
        self.batching = batching
        self.policy = policy or BatchPolicy()
        # Called on the runner's thread after each model call with (model name, items in the
        # call, wall seconds, CPU seconds of the runner's thread): the metrics hook. Must be
        # thread-safe and cheap.
        self.on_call: Callable[[str, int, float, float], None] | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"model-{name}",
            initializer=name_os_thread,
            initargs=(f"model-{name}",),
        )
        self._model: Predictor[In, Out] | None = None
        self._batcher: MicroBatcher[In, Out] | None = None
        self.load_seconds = 0.0
        self.warmup_seconds = 0.0
        self.calls = 0
        self.items = 0
        self.busy_seconds = 0.0
        # CPU time of the model calls on the runner's thread (time.thread_time): the model's
        # own work, whatever else the process does meanwhile. A TFLite interpreter with
        # num_threads > 1 also works on pool threads of its own, which this does not see
        # (the default of one thread per interpreter per worker is counted whole).
        self.cpu_seconds = 0.0

    @property
    def ready(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Predictor[In, Out]:
        if self._model is None:
            raise RuntimeError(f"model {self.name!r} is not loaded")
        return self._model

    @property
    def queued_items(self) -> int:
        return self._batcher.queued_items if self._batcher else 0

    def _start(self, factory: Callable[[], Predictor[In, Out]], warm_batch: In) -> None:
        with _device_scope(self.device, self.tensorflow):
            start = time.perf_counter()
            model = factory()
            loaded = time.perf_counter()
            model.predict(warm_batch)  # first call builds kernels and allocates buffers
            self.load_seconds = loaded - start
            self.warmup_seconds = time.perf_counter() - loaded
        self._model = model

    async def start(self, factory: Callable[[], Predictor[In, Out]], warm_batch: In) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._start, factory, warm_batch)

    def start_sync(self, factory: Callable[[], Predictor[In, Out]], warm_batch: In) -> None:
        self._executor.submit(self._start, factory, warm_batch).result()

    def _call(self, batch: In) -> Out:
        model = self.model
        cpu_start = time.thread_time()
        start = time.perf_counter()
        with _device_scope(self.device, self.tensorflow):
            result = model.predict(batch)
        elapsed = time.perf_counter() - start
        cpu = time.thread_time() - cpu_start
        items = self.batching.size(batch)
        self.calls += 1
        self.items += items
        self.busy_seconds += elapsed
        self.cpu_seconds += cpu
        if self.on_call is not None:
            self.on_call(self.name, items, elapsed, cpu)
        return result

    async def _execute(self, batch: In) -> Out:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, batch)

    async def run(self, batch: In) -> Out:
        """Queue ``batch`` for the model; concurrent calls are merged (see batching.py).

        Raises ``QueueFullError`` when the model's queue is full.
        """
        if self._batcher is None:
            self._batcher = MicroBatcher(
                self.name,
                self._execute,
                size=self.batching.size,
                merge=self.batching.merge,
                split=self.batching.split,
                output_size=self.batching.output_size,
                policy=self.policy,
            )
        return await self._batcher.submit(batch)

    def run_sync(self, batch: In) -> Out:
        """Blocking, unbatched call on the runner's thread (CLI and evaluation code)."""
        return self._executor.submit(self._call, batch).result()

    async def aclose(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
            self._batcher = None

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._model = None


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` in the OS too (Linux: 15 bytes), so ``top -H``,
    ``/proc/<pid>/task/*/comm`` and profilers show which model a thread (and the thread
    pool its runtime starts from it) works for."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode("utf-8", "replace")[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):  # not Linux: names are cosmetic
        pass


def _device_scope(device: str, tensorflow: bool) -> Any:
    if not tensorflow:
        return contextlib.nullcontext()
    import tensorflow as tf

    return tf.device(device)
