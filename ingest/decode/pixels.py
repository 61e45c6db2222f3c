"""Bringing deep or odd pixel data to the 8-bit BGR every later step expects."""

from __future__ import annotations

import cv2
import numpy as np


def stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map the range actually used to 0..255: a 12-bit scan in a 16-bit container would otherwise look black."""
    values = values.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return ((values - low) * (255.0 / (high - low))).astype(np.uint8)


def to_bgr(image: np.ndarray) -> np.ndarray:
    """uint8 BGR from gray, BGR or BGRA of any integer or float depth (as OpenCV hands them out)."""
    if image.dtype != np.uint8:
        image = stretch_to_uint8(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image)
