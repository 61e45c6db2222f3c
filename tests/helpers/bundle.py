"""The suite's small model bundle (the `bundle_dir` fixture makes it)."""

from __future__ import annotations

# Small enough to keep the suite fast, large enough that the 3x4 layout is still legible.
TEST_INPUT_SIZE = (192, 256)
