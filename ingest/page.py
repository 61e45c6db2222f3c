"""The plain data object every decoder yields."""

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
