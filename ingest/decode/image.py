"""PNG, JPEG, TIFF (multi-page, 16-bit) and BMP scans and photos.

Pillow reads only the header first, so the page count and pixel limits are enforced before a
decompression bomb can inflate; OpenCV then decodes. JPEG EXIF orientation is applied.

With `working_copy` each page comes back as the working copy `clean` would make of it: JPEG through
libjpeg's DCT scaling (1/2, 1/4, 1/8; any odd remainder of the factor is left to `clean`), PNG and BMP
shrunk right after decoding, before any depth or colour conversion, and TIFF frames box-filtered by Pillow
before they become arrays.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ingest.decode.limits import DecodeLimits
from ingest.decode.pixels import to_bgr
from ingest.decode.working import power_of_two_part, shrink, work_factor
from ingest.page import Page
from ingest.reasons import IngestError, Reason
from ingest.sniff import FileType

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # failures are reported as reasons instead
_END_MARKERS = {FileType.PNG: b"IEND\xaeB`\x82", FileType.JPEG: b"\xff\xd9"}
_DEEP = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
_REDUCED_COLOR = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}
_ORIENTATION = 0x0112
_REDUCIBLE = {"L", "RGB", "I"}  # Pillow's box-filter `reduce` takes these modes, not I;16
_SIDEWAYS = {5, 6, 7, 8}  # EXIF orientations that turn the stored image by 90 degrees


def _orientation(image: Image.Image) -> int | None:
    """The EXIF orientation tag; a broken EXIF block counts as none, as OpenCV then applies none either."""
    try:
        return image.getexif().get(_ORIENTATION)
    except Exception:
        return None


def _header(data: bytes, limits: DecodeLimits) -> tuple[int, int, int]:
    """(width, height, frames) from the header alone; width and height as displayed (EXIF orientation applied)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                frames = getattr(image, "n_frames", 1)
                if image.format == "JPEG" and _orientation(image) in _SIDEWAYS:
                    width, height = height, width
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


def _tiff_frames(data: bytes, working_copy: bool = False) -> list[np.ndarray]:
    """Every frame through Pillow, which also reads bilevel fax TIFFs and refuses strips that stop early."""
    frames = []
    try:
        with Image.open(io.BytesIO(data)) as image:
            for index in range(getattr(image, "n_frames", 1)):
                image.seek(index)
                frame = image if image.mode in ("L", "RGB") or image.mode.startswith("I") else image.convert("RGB")
                factor = work_factor(frame.width) if working_copy else 1
                if factor >= 2 and frame.mode in _REDUCIBLE:
                    frame, factor = frame.reduce(factor), 1
                pixels = shrink(np.asarray(frame), factor)  # Pillow cannot reduce 16-bit modes (I;16)
                frames.append(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise IngestError(Reason.TRUNCATED if "truncated" in str(exc) else Reason.CORRUPT,
                          f"TIFF pixel data cannot be read: {exc}") from exc
    return frames


def decode_image(data: bytes, file_type: FileType, limits: DecodeLimits, working_copy: bool = False) -> list[Page]:
    """One page per image, one per frame for multi-page TIFF; `working_copy` decodes them at working size."""
    width, _, _ = _header(data, limits)
    factor = work_factor(width) if working_copy else 1
    buffer = np.frombuffer(data, dtype=np.uint8)
    if file_type is FileType.TIFF:
        images = _tiff_frames(data, working_copy)
    elif _ends_early(data, file_type):
        raise IngestError(Reason.TRUNCATED, f"the {file_type.value.upper()} data stops before its stated end")
    elif file_type is FileType.JPEG:  # OpenCV applies EXIF orientation, with the reduced flags too
        images = [cv2.imdecode(buffer, _REDUCED_COLOR[power_of_two_part(factor)])]
    else:
        image = cv2.imdecode(buffer, _DEEP)
        images = [shrink(image, factor) if image is not None else image]
    images = [image for image in images if image is not None and image.size]
    if not images:
        raise IngestError(Reason.CORRUPT, "image data could not be decoded")
    return [Page(image=to_bgr(image), page_no=number, source="image") for number, image in enumerate(images, 1)]
