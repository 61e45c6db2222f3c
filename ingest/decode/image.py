"""PNG, JPEG, TIFF (multi-page, 16-bit) and BMP scans and photos.

Pillow reads only the header first, so the page count and pixel limits are enforced before a
decompression bomb can inflate; OpenCV then decodes. JPEG EXIF orientation is applied.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ingest.decode.limits import DecodeLimits
from ingest.decode.pixels import to_bgr
from ingest.page import Page
from ingest.reasons import IngestError, Reason
from ingest.sniff import FileType

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # failures are reported as reasons instead
_END_MARKERS = {FileType.PNG: b"IEND\xaeB`\x82", FileType.JPEG: b"\xff\xd9"}
_DEEP = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


def _header(data: bytes, limits: DecodeLimits) -> tuple[int, int, int]:
    """(width, height, frames) from the header alone."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                frames = getattr(image, "n_frames", 1)
    except Image.DecompressionBombError as exc:
        raise IngestError(Reason.TOO_LARGE, "image dimensions exceed the decompression-bomb limit") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise IngestError(Reason.CORRUPT, f"image header cannot be read: {exc}") from exc
    limits.check_pages(frames)
    limits.check_pixels(height, width)
    return width, height, frames


def _loads_fully(data: bytes) -> bool:
    """Pillow refuses pixel data that stops early, where OpenCV returns a half-grey image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            for frame in range(getattr(image, "n_frames", 1)):
                image.seek(frame)
                image.load()
    except (OSError, ValueError, SyntaxError, EOFError):
        return False
    return True


def _ends_early(data: bytes, file_type: FileType) -> bool:
    marker = _END_MARKERS.get(file_type)
    if file_type is FileType.TIFF:  # strips can end anywhere; only decoding tells
        return not _loads_fully(data)
    if marker is None or data.rstrip(b"\0").endswith(marker):
        return False
    if file_type is FileType.JPEG:  # some cameras append data after the end marker
        return not _loads_fully(data)
    return True


def decode_image(data: bytes, file_type: FileType, limits: DecodeLimits) -> list[Page]:
    """One page per image, one per frame for multi-page TIFF."""
    _header(data, limits)
    if _ends_early(data, file_type):
        raise IngestError(Reason.TRUNCATED, f"the {file_type.value.upper()} pixel data stops before the image "
                                            "is complete")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if file_type is FileType.TIFF:
        ok, frames = cv2.imdecodemulti(buffer, _DEEP)
        images = list(frames) if ok else []
    elif file_type is FileType.JPEG:
        images = [cv2.imdecode(buffer, cv2.IMREAD_COLOR)]  # applies EXIF orientation
    else:
        images = [cv2.imdecode(buffer, _DEEP)]
    images = [image for image in images if image is not None and image.size]
    if not images:
        raise IngestError(Reason.CORRUPT, "image data could not be decoded")
    return [Page(image=to_bgr(image), page_no=number, source="image") for number, image in enumerate(images, 1)]
