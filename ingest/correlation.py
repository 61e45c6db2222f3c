"""The correlation id of the document being worked on, so every log line about it can be found by one key.

The id is the document key's first 12 hex digits (its sha256, the prefix log lines already print), set as soon
as the bytes are hashed; before that, from the claim to the hash, it is the claim's id (`claim_id`), and one
line links the two. It lives here, in the lowest layer, because the watcher claims files without knowing the
worker; `worker.logs` reads it into each JSON log line. Neither id carries patient data: a claim id is a time
and a process id, a document key is a hash.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

log = logging.getLogger(__name__)

KEY_DIGITS = 12
_current: ContextVar[str | None] = ContextVar("ecg_intake_document", default=None)


def current_document() -> str | None:
    """The correlation id of the work in hand in this thread (or task), None outside of it."""
    return _current.get()


@contextmanager
def working_on(correlation_id: str) -> Iterator[None]:
    """`correlation_id` for the duration of the block; what it was before afterwards."""
    token = _current.set(correlation_id)
    try:
        yield
    finally:
        _current.reset(token)


def follow_document(sha256: str) -> str:
    """From here on the work in hand is the document `sha256`; returns its correlation id.

    Called where the hash becomes known: the line linking the claim's id to the document's is what lets an
    operator follow a file from the watcher's claim to its classification. Only inside a `working_on` block
    (a task's), which ends the id with the work; outside one nothing is set, so nothing outlives its work.
    """
    key = sha256[:KEY_DIGITS]
    before = _current.get()
    if before is not None and before != key:
        _current.set(key)
        log.info("claim %s is document %s", before, key)
    return key
