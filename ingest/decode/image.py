"""PNG, JPEG, TIFF and BMP scans and photos through OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ingest.page import Page
from ingest.reasons import IngestError, Reason


def decode_image(path: Path) -> list[Page]:
    """One page per image; OpenCV applies the JPEG EXIF orientation on read."""
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise IngestError(Reason.CORRUPT, "image data could not be decoded")
    return [Page(image=image, page_no=1, source="image")]
