"""PDF pages rasterised by poppler through pdf2image.

`pdfinfo` runs first: it says whether a password is needed, how many pages there are and how big
each is, so the page and pixel limits hold before poppler allocates anything. Both poppler calls
run under the decode time limit.

With `working_copy` poppler rasterises at `pdf_dpi / work_factor(widest page width at pdf_dpi)`, so the
working copy `clean` would make comes straight out of it (100 DPI for a landscape A4 page at 200 DPI).
The limits still hold for the full `pdf_dpi` size.
"""

from __future__ import annotations

import re
import time

import cv2
import numpy as np
from pdf2image import convert_from_bytes, pdfinfo_from_bytes
from pdf2image.exceptions import (
    PDFInfoNotInstalledError,
    PDFPageCountError,
    PDFPopplerTimeoutError,
    PDFSyntaxError,
)

from ingest.decode.limits import DecodeLimits
from ingest.decode.working import work_factor
from ingest.page import Page
from ingest.reasons import IngestError, InstallationError, Reason

_PAGE_SIZE = re.compile(r"([\d.]+) x ([\d.]+) pts")
_METADATA = ("Title", "Author", "Producer", "Creator", "CreationDate", "ModDate")
NO_POPPLER = "poppler is not installed (no pdfinfo or pdftoppm on PATH); install it: apt-get install poppler-utils"


def _looks_cut_off(data: bytes) -> bool:
    """Objects but no end-of-file marker: the usual shape of a PDF whose copy stopped early."""
    return b" obj" in data and b"%%EOF" not in data[-2048:]


def _info(data: bytes, timeout: float, last_page: int) -> dict:
    """pdfinfo's fields, with a size line for each page up to `last_page`."""
    try:
        return pdfinfo_from_bytes(data, timeout=max(1, round(timeout)), first_page=1, last_page=last_page)
    except PDFInfoNotInstalledError as exc:
        raise InstallationError(NO_POPPLER) from exc
    except PDFPopplerTimeoutError as exc:
        raise IngestError(Reason.DECODE_TIMEOUT, f"pdfinfo took longer than {timeout:.0f}s") from exc
    except (PDFPageCountError, PDFSyntaxError) as exc:
        text = str(exc).lower()
        if "password" in text or "encrypt" in text:
            raise IngestError(Reason.ENCRYPTED, "the PDF needs a password to open") from exc
        if _looks_cut_off(data):
            raise IngestError(Reason.TRUNCATED, "the PDF ends without its end-of-file marker") from exc
        raise IngestError(Reason.CORRUPT, "poppler cannot read the PDF structure") from exc


def _check(info: dict, limits: DecodeLimits) -> None:
    encrypted = str(info.get("Encrypted", "no"))
    if encrypted.startswith("yes") and not limits.allow_permission_only_pdf:
        raise IngestError(Reason.ENCRYPTED, "the PDF is encrypted (it opens without a password but carries "
                                            "permission restrictions; allow_permission_only_pdf accepts these)")
    pages = int(info.get("Pages") or 0)
    if pages == 0:
        raise IngestError(Reason.CORRUPT, "the PDF has no pages")
    limits.check_pages(pages)


def page_sizes(info: dict, dpi: float) -> list[tuple[float, float]]:
    """(width, height) in pixels at `dpi` of each page pdfinfo listed, as rasterised (page rotation applied)."""
    sizes = []
    for key, value in info.items():
        match = _PAGE_SIZE.match(str(value)) if key.startswith("Page") and key.endswith("size") else None
        if match:
            width, height = (float(v) / 72 * dpi for v in match.groups())
            rotation = str(info.get(key[: -len("size")] + "rot", "0")).strip()
            sizes.append((height, width) if rotation in ("90", "270") else (width, height))
    return sizes


def _checkpage_sizes(info: dict, limits: DecodeLimits) -> None:
    for width, height in page_sizes(info, limits.pdf_dpi):
        limits.check_pixels(round(height), round(width))


def raster_dpi(info: dict, limits: DecodeLimits, working_copy: bool) -> float:
    """`pdf_dpi`, or for a working copy that divided by the work factor of the widest page at `pdf_dpi`."""
    if not working_copy:
        return limits.pdf_dpi
    widths = [width for width, _ in page_sizes(info, limits.pdf_dpi)]
    return limits.pdf_dpi / work_factor(round(max(widths))) if widths else limits.pdf_dpi


def decode_pdf(data: bytes, limits: DecodeLimits | None = None, working_copy: bool = False) -> list[Page]:
    """All pages of a PDF (a file's bytes, or the document an encapsulated-PDF DICOM carries)."""
    limits = limits or DecodeLimits()
    started = time.monotonic()
    info = _info(data, limits.timeout_s, last_page=limits.max_pages)
    _check(info, limits)
    _checkpage_sizes(info, limits)
    metadata = {f"pdf_{key.lower()}": str(info[key]) for key in _METADATA if info.get(key)}
    remaining = max(1, round(limits.timeout_s - (time.monotonic() - started)))
    try:
        images = convert_from_bytes(data, dpi=raster_dpi(info, limits, working_copy), timeout=remaining)
    except (PDFInfoNotInstalledError, FileNotFoundError) as exc:
        raise InstallationError(NO_POPPLER) from exc
    except PDFPopplerTimeoutError as exc:
        raise IngestError(Reason.DECODE_TIMEOUT, f"rasterising took longer than {limits.timeout_s:.0f}s") from exc
    except (PDFPageCountError, PDFSyntaxError) as exc:
        raise IngestError(Reason.CORRUPT, "poppler failed to rasterise the PDF") from exc
    if not images:
        raise IngestError(Reason.CORRUPT, "poppler produced no page images")
    pages = []
    for number, image in enumerate(images, start=1):
        bgr = cv2.cvtColor(np.asarray(image.convert("RGB") if image.mode != "RGB" else image), cv2.COLOR_RGB2BGR)
        pages.append(Page(image=bgr, page_no=number, source="pdf", metadata=metadata))
    return pages
