"""Micro-batching: pages from concurrent classify tasks share one forward pass.

A worker that runs classify tasks in threads (`--pool threads --concurrency N`) wraps its engine in a
`BatchingEngine`. Each task's `predict` call queues its pages and waits; one thread collects pages until
it has `batch_size` of them, every possible caller (`callers`, the pool's concurrency) is waiting, or the
oldest has waited `max_wait_ms`; it runs the engine once and hands each caller its own rows. Under load
the engine sees full batches; a lone file waits at most `max_wait_ms`, and with one caller not at all.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from model_training.manifest import Manifest
from worker.engine import Engine


@dataclass
class _Request:
    pages: np.ndarray
    future: Future = field(default_factory=Future)


class BatchingEngine:
    """An `Engine` whose `predict` may be called from many threads at once; it batches their pages."""

    def __init__(self, engine: Engine, batch_size: int = 8, max_wait_ms: float = 50.0, callers: int = 1) -> None:
        self.engine = engine
        self.name: str = engine.name
        self.manifest: Manifest = engine.manifest
        self.batch_size = batch_size
        self.max_wait = max_wait_ms / 1000
        self.callers = callers
        self.batches: list[int] = []  # pages per forward pass, for benchmarks and tests
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._thread.start()

    def predict(self, pages: np.ndarray) -> np.ndarray:
        if len(pages) == 0:
            return np.zeros((0, len(self.manifest.labels)), np.float32)
        request = _Request(pages)
        self._requests.put(request)
        return request.future.result()

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join()

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        """Requests for one pass: the first, then more until the batch is full or the wait is over."""
        taken, pages, deadline = [first], len(first.pages), time.monotonic() + self.max_wait
        while pages < self.batch_size and len(taken) < self.callers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                request = self._requests.get(timeout=remaining)
            except queue.Empty:
                break
            if request is None:
                return taken, True
            taken.append(request)
            pages += len(request.pages)
        return taken, False

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._requests.get()
            if first is None:
                return
            taken, stopping = self._collect(first)
            try:
                probabilities = self.engine.predict(np.concatenate([r.pages for r in taken]))
            except BaseException as exc:  # every waiting task gets the error and fails (then retries) on its own
                for request in taken:
                    request.future.set_exception(exc)
                continue
            self.batches.append(sum(len(r.pages) for r in taken))
            start = 0
            for request in taken:
                request.future.set_result(probabilities[start : start + len(request.pages)])
                start += len(request.pages)
