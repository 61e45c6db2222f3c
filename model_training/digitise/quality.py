"""How well a stored lead is known, in one word: the overlay colours by it, the database stores it, the review
page shows it. A drawn lead is judged by the share of the time it was drawn that could be read."""

from __future__ import annotations

SOURCE = "source"  # the waveform file's own samples: nothing was read back
READ = "read"
PARTIAL = "partial"
UNREAD = "unread"
QUALITIES = (SOURCE, READ, PARTIAL, UNREAD)
READ_SHARE, PARTIAL_SHARE = 0.9, 0.5  # a lead read for at least this share of its drawn time is read / partial


def lead_quality(read_share: float) -> str:
    """The quality of a lead read back from a page, from its read share (0..1)."""
    if read_share >= READ_SHARE:
        return READ
    return PARTIAL if read_share >= PARTIAL_SHARE else UNREAD
