"""Dynamic batching: concurrent requests for one loaded model version share engine calls.

Request threads call :meth:`BatchingEngine.predict` with one resized image each. The
first waiting thread that finds a free slot collects: it waits up to ``max_delay_s`` for
``max_batch`` images to be waiting (less when they are there sooner), takes them, and runs
them through the engine as one batch for all their threads. At most ``parallel`` batches
run at once; while they do, new requests wait and form the next batch, so under load the
batches fill up without waiting for the delay.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from inferencer.backends.base import InferenceEngine
from ssdstack.settings import WorkerSettings


@dataclass(frozen=True)
class BatchPolicy:
    """``max_batch`` images per engine call at most, collected for up to ``max_delay_s``;
    at most ``parallel`` engine calls at once."""

    max_batch: int
    max_delay_s: float
    parallel: int = 1

    def __post_init__(self):
        if self.max_batch < 1 or self.max_delay_s < 0 or self.parallel < 1:
            raise ValueError(f"a batch policy needs max_batch >= 1, max_delay_s >= 0 and parallel >= 1: {self}")


class _Request:
    __slots__ = ("image", "result", "error", "done")

    def __init__(self, image: np.ndarray):
        self.image = image
        self.result: tuple[np.ndarray, np.ndarray] | None = None
        self.error: BaseException | None = None
        self.done = False


class BatchingEngine(InferenceEngine):
    """A loaded ``engine`` whose :meth:`predict` batches concurrent calls (see the module).

    ``batches`` counts the engine calls by batch size, for tests and metrics.
    """

    def __init__(self, engine: InferenceEngine, policy: BatchPolicy):
        self.engine = engine
        self.policy = policy
        self.name, self.artefact, self.precision = engine.name, engine.artefact, engine.precision
        self.max_batch = min(policy.max_batch, engine.max_batch)
        self.batches: dict[int, int] = {}
        self._waiting: deque[_Request] = deque()
        self._collecting = False
        self._running = 0
        self._changed = threading.Condition()

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        request = _Request(image)
        with self._changed:
            self._waiting.append(request)
            self._changed.notify_all()
            while not request.done:
                if self._collecting or self._running >= self.policy.parallel or request not in self._waiting:
                    self._changed.wait()
                    continue
                batch = self._collect()
                self._changed.release()
                try:
                    self._run(batch)
                finally:
                    self._changed.acquire()
                    self._running -= 1
                    self._changed.notify_all()
        if request.error is not None:
            raise request.error
        return request.result

    def predict_batch(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.engine.predict_batch(images)

    def _collect(self) -> list[_Request]:
        """With the lock held: wait for a batch to fill (up to the delay) and take it."""
        self._collecting = True
        deadline = time.monotonic() + self.policy.max_delay_s
        while len(self._waiting) < self.max_batch and (left := deadline - time.monotonic()) > 0:
            self._changed.wait(left)
        batch = [self._waiting.popleft() for _ in range(min(self.max_batch, len(self._waiting)))]
        self._collecting = False
        self._running += 1
        self.batches[len(batch)] = self.batches.get(len(batch), 0) + 1
        self._changed.notify_all()
        return batch

    def _run(self, batch: list[_Request]) -> None:
        try:
            boxes, scores = self.engine.predict_batch(np.stack([request.image for request in batch]))
        except BaseException as error:  # every request of the batch gets the engine's error
            for request in batch:
                request.error, request.done = error, True
            return
        for index, request in enumerate(batch):
            request.result, request.done = (boxes[index], scores[index]), True


def batching(engine: InferenceEngine, policy: BatchPolicy | None) -> InferenceEngine:
    """``engine`` with its calls batched by ``policy``; itself when there is no policy or
    it runs one image at a time (a serving artefact converted for batch 1)."""
    if policy is None or policy.max_batch < 2 or engine.max_batch < 2:
        return engine
    return BatchingEngine(engine, policy)


def batch_policy(settings: WorkerSettings) -> BatchPolicy | None:
    """The inferencer's policy from its settings; None when batching is off. As many
    batches may run at once as full batches fit in its threads."""
    if not settings.infer_batching:
        return None
    return BatchPolicy(settings.infer_max_batch, settings.infer_max_delay_ms / 1000,
                       parallel=max(1, settings.infer_concurrency // settings.infer_max_batch))
