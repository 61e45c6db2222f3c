"""One way to fan CPU-bound work out over processes, shared by the dataset writer and the trainer's page cache."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def parallel_map(function: Callable[[Item], Result], items: Iterable[Item], workers: int, chunksize: int = 4
                 ) -> Iterator[Result]:
    """Results in input order; in-process for one worker or a handful of items."""
    items = list(items)
    if workers <= 1 or len(items) < 4:
        yield from map(function, items)
        return
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold torch threads
    with context.Pool(workers) as pool:
        yield from pool.imap(function, items, chunksize=chunksize)
