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


def _ends_early(data: bytes, file_type: FileType) -> bool:
    if file_type is FileType.BMP:  # the header states the file size
        return len(data) < 6 or int.from_bytes(data[2:6], "little") > len(data)
    if data.rstrip(b"\0").endswith(_END_MARKERS[file_type]):
        return False
    if file_type is FileType.JPEG:  # some cameras append data after the end marker; Pillow decides
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        except OSError:
            return True
        return False
    return True


def _tiff_frames(data: bytes) -> list[np.ndarray]:
    """Every frame through Pillow, which also reads bilevel fax TIFFs and refuses strips that stop early."""
    frames = []
    try:
        with Image.open(io.BytesIO(data)) as image:
            for index in range(getattr(image, "n_frames", 1)):
                image.seek(index)
                frame = image if image.mode in ("L", "RGB") or image.mode.startswith("I") else image.convert("RGB")
                pixels = np.asarray(frame)
                frames.append(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise IngestError(Reason.TRUNCATED if "truncated" in str(exc) else Reason.CORRUPT,
                          f"TIFF pixel data cannot be read: {exc}") from exc
    return frames


def decode_image(data: bytes, file_type: FileType, limits: DecodeLimits) -> list[Page]:
    """One page per image, one per frame for multi-page TIFF."""
    _header(data, limits)
    if file_type is FileType.TIFF:
        images = _tiff_frames(data)
    elif _ends_early(data, file_type):
        raise IngestError(Reason.TRUNCATED, f"the {file_type.value.upper()} data stops before its stated end")
    elif file_type is FileType.JPEG:
        images = [cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)]  # applies EXIF orientation
    else:
        images = [cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _DEEP)]
    images = [image for image in images if image is not None and image.size]
    if not images:
        raise IngestError(Reason.CORRUPT, "image data could not be decoded")
    return [Page(image=to_bgr(image), page_no=number, source="image") for number, image in enumerate(images, 1)]
