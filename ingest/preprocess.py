"""The one image-cleaning path shared by training and inference.

Every page the model sees, at training or at intake, goes through `preprocess`. Its output
depends on `PREPROCESS_VERSION`; a model bundle trained under another version is refused.
"""

from __future__ import annotations

import cv2
import numpy as np

PREPROCESS_VERSION = "1"


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 grayscale from grayscale, BGR or BGRA input."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"unexpected image shape {image.shape}")


def letterbox(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Fit into (height, width) keeping the aspect ratio; pad with white so the page stays paper."""
    height, width = size
    scale = min(height / gray.shape[0], width / gray.shape[1])
    new_h, new_w = max(1, round(gray.shape[0] * scale)), max(1, round(gray.shape[1] * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(gray, (new_w, new_h), interpolation=interpolation)
    out = np.full((height, width), 255, np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


def preprocess(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Page pixels -> the model's (height, width) uint8 grayscale input."""
    return letterbox(to_gray(image), size)
