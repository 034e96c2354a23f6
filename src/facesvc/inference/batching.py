"""Micro-batching: concurrent callers' inputs become one model call.

Adaptive by construction: when the model is idle a request runs at once (no added latency);
while a batch runs, new requests queue and the next call takes all of them (up to
``max_batch`` items). ``max_wait`` optionally holds an idle worker a little longer to let a
batch form. The queue is bounded in items: when full, ``submit`` fails fast with
:class:`QueueFullError` instead of letting memory and latency pile up. A model call must give
one output per input: otherwise every caller of that call fails with :class:`ModelOutputError`
(as Ray Serve's ``@serve.batch`` does) rather than one of them getting another's rows or none.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from facesvc.errors import QueueFullError

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


class ModelOutputError(RuntimeError):
    """A model call gave more or fewer outputs than it was given inputs (a bug in the model's
    wrapper, not in any one input)."""


@dataclass
class _Pending(Generic[In, Out]):
    batch: In
    size: int
    future: asyncio.Future[Out]
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class BatchPolicy:
    max_batch: int = 32  # items (faces, images) per model call
    max_wait: float = 0.0  # seconds an idle worker waits for more items before running
    max_queue: int = 256  # items waiting; beyond it, submit() raises QueueFullError


class MicroBatcher(Generic[In, Out]):
    """Merges queued inputs, runs ``call`` once, splits the result back per caller.

    ``merge`` joins several callers' batches into one; ``split`` cuts the model's output
    back by the callers' sizes, once ``output_size`` has found one output per input. If a
    merged call fails, each caller's batch is retried alone, so one bad input fails only its
    own request; a call that miscounts its outputs fails all its callers at once.
    """

    def __init__(
        self,
        name: str,
        call: Callable[[In], Awaitable[Out]],
        *,
        size: Callable[[In], int],
        merge: Callable[[Sequence[In]], In],
        split: Callable[[Out, Sequence[int]], list[Out]],
        output_size: Callable[[Out], int],
        policy: BatchPolicy,
    ) -> None:
        self.name = name
        self._call, self._size, self._merge, self._split = call, size, merge, split
        self._output_size = output_size
        self.policy = policy
        self._queue: deque[_Pending[In, Out]] = deque()
        self._queued_items = 0
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    @property
    def queued_items(self) -> int:
        return self._queued_items

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError(f"model {self.name!r} shut down"))
        self._queued_items = 0

    async def submit(self, batch: In) -> Out:
        size = self._size(batch)
        if self._queued_items + size > self.policy.max_queue and self._queued_items > 0:
            raise QueueFullError(self.name, self._queued_items, self.policy.max_queue)
        self.start()
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(batch, size, future))
        self._queued_items += size
        self._wakeup.set()
        return await future

    def _take(self) -> list[_Pending[In, Out]]:
        taken: list[_Pending[In, Out]] = []
        items = 0
        while self._queue:
            head = self._queue[0]
            if head.future.cancelled():  # the caller went away: don't compute for nobody
                self._queue.popleft()
                self._queued_items -= head.size
                continue
            if taken and items + head.size > self.policy.max_batch:
                break
            self._queue.popleft()
            self._queued_items -= head.size
            taken.append(head)
            items += head.size
        return taken

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.policy.max_wait > 0 and self._queued_items < self.policy.max_batch:
                await self._gather_more()
            taken = self._take()
            if taken:
                await self._process(taken)

    async def _gather_more(self) -> None:
        deadline = self._queue[0].enqueued + self.policy.max_wait
        while self._queued_items < self.policy.max_batch:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    async def _process(self, taken: list[_Pending[In, Out]]) -> None:
        sizes = [p.size for p in taken]
        self.batches += 1
        self.items += sum(sizes)
        if len(taken) == 1:
            await self._settle(taken[0])
            return
        try:
            merged = self._merge([p.batch for p in taken])
            outputs = self._split(await self._checked_call(merged, sum(sizes)), sizes)
        except ModelOutputError as exc:
            log.error("%s; failing its %d callers", exc, len(taken))
            for pending in taken:
                if not pending.future.done():
                    pending.future.set_exception(ModelOutputError(str(exc)))
            return
        except Exception:
            log.warning("batch of %d on %s failed; retrying each alone", len(taken), self.name)
            for pending in taken:
                await self._settle(pending)
            return
        for pending, output in zip(taken, outputs, strict=True):
            if not pending.future.done():
                pending.future.set_result(output)

    async def _checked_call(self, batch: In, size: int) -> Out:
        output = await self._call(batch)
        count = self._output_size(output)
        if count != size:
            raise ModelOutputError(
                f"model {self.name!r} returned {count} outputs for a batch of {size} inputs"
            )
        return output

    async def _settle(self, pending: _Pending[In, Out]) -> None:
        try:
            result = await self._checked_call(pending.batch, pending.size)
        except Exception as exc:
            if not pending.future.done():
                pending.future.set_exception(exc)
            return
        if not pending.future.done():
            pending.future.set_result(result)


class ArrayBatching:
    """Batches are numpy arrays stacked on axis 0 (images, crops)."""

    @staticmethod
    def size(batch: np.ndarray) -> int:
        return int(batch.shape[0])

    @staticmethod
    def merge(batches: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(list(batches), axis=0)

    @staticmethod
    def split(output: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
        return list(np.split(output, np.cumsum(sizes)[:-1].tolist(), axis=0))

    @staticmethod
    def output_size(output: np.ndarray) -> int:
        return int(output.shape[0])


class ListBatching:
    """Batches are lists (images of different sizes, (image, face) pairs)."""

    @staticmethod
    def size(batch: list[Any]) -> int:
        return len(batch)

    @staticmethod
    def merge(batches: Sequence[list[Any]]) -> list[Any]:
        return [item for batch in batches for item in batch]

    @staticmethod
    def split(output: list[Any], sizes: Sequence[int]) -> list[list[Any]]:
        bounds = np.cumsum([0, *sizes]).tolist()
        return [output[a:b] for a, b in itertools.pairwise(bounds)]

    @staticmethod
    def output_size(output: list[Any]) -> int:
        return len(output)
