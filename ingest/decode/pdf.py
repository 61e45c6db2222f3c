"""PDF pages rasterised by poppler through pdf2image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pdf2image import convert_from_bytes, convert_from_path, pdfinfo_from_bytes, pdfinfo_from_path
from pdf2image.exceptions import PDFPageCountError, PDFSyntaxError

from ingest.page import Page
from ingest.reasons import IngestError, Reason


def _info(source: Path | bytes) -> dict:
    try:
        return pdfinfo_from_bytes(source) if isinstance(source, bytes) else pdfinfo_from_path(str(source))
    except (PDFPageCountError, PDFSyntaxError) as exc:
        text = str(exc).lower()
        if "password" in text or "encrypt" in text:
            raise IngestError(Reason.ENCRYPTED, "the PDF needs a password") from exc
        raise IngestError(Reason.CORRUPT, "poppler cannot read the PDF structure") from exc


def decode_pdf(source: Path | bytes, dpi: int = 200) -> list[Page]:
    """All pages of a PDF file, or of PDF bytes (as an encapsulated-PDF DICOM carries them)."""
    info = _info(source)
    metadata = {key.lower(): info[key] for key in ("Title", "Producer", "Creator", "CreationDate") if info.get(key)}
    try:
        images = convert_from_bytes(source, dpi=dpi) if isinstance(source, bytes) else \
            convert_from_path(str(source), dpi=dpi)
    except (PDFPageCountError, PDFSyntaxError) as exc:
        raise IngestError(Reason.CORRUPT, "poppler failed to rasterise the PDF") from exc
    pages = []
    for number, image in enumerate(images, start=1):
        rgb = np.asarray(image.convert("RGB"))
        pages.append(Page(image=np.ascontiguousarray(rgb[:, :, ::-1]), page_no=number, source="pdf",
                          metadata=metadata))
    return pages
