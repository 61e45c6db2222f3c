"""The plain data objects of a page: as decoded, and as intake stores it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Page:
    """One ECG page as pixels: uint8 grayscale (H, W) or BGR (H, W, 3)."""

    image: np.ndarray
    page_no: int
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    # The recording a waveform file's page was drawn from (leads x samples, mV, STANDARD_LEADS order, at
    # `metadata["sampling_frequency"]`): what `ecg-intake digitise` writes instead of reading the drawing back.
    signals: np.ndarray | None = None


@dataclass
class PreparedPage:
    """A page reduced to what intake stores: the model input (cleaned, letterboxed) and a thumbnail.

    Made in the decoder process, so a full-resolution page (about 12 MB at 200 DPI) never crosses the pipe.
    """

    model_input: np.ndarray
    thumbnail: np.ndarray
    page_no: int
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
