"""The working copy `clean` makes of a page, produced while decoding where that is cheaper than a full decode.

`clean` shrinks every page by `work_factor(width)` with INTER_AREA before it looks at it, so decoding
the full page only to throw three quarters of its pixels away is wasted work. The decoders use the same
factor and the same resize, so the cleaned page, and the model input, stay (nearly) what they were.
"""

from __future__ import annotations

import cv2
import numpy as np

from ingest.preprocess import work_factor

__all__ = ["power_of_two_part", "shrink", "work_factor"]
_RESIZABLE = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


def shrink(image: np.ndarray, factor: int) -> np.ndarray:
    """`image` made `factor` times smaller exactly as `clean` does it; dtypes OpenCV cannot resize pass unchanged."""
    if factor < 2 or image.dtype.type not in _RESIZABLE or (image.ndim == 3 and image.shape[2] > 4):
        return image
    return cv2.resize(image, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)


def power_of_two_part(factor: int, most: int = 8) -> int:
    """The largest power of two, at most `most`, that divides `factor`: what JPEG's DCT scaling can do of it."""
    part = 1
    while part * 2 <= most and factor % (part * 2) == 0:
        part *= 2
    return part
