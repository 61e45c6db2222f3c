"""Turn a file into pages; the file type is sniffed from its bytes."""

from __future__ import annotations

from pathlib import Path

from ingest.decode.dicom import decode_dicom
from ingest.decode.image import decode_image
from ingest.decode.pdf import decode_pdf
from ingest.page import Page
from ingest.reasons import IngestError, Reason
from ingest.sniff import FileType, sniff

__all__ = ["IngestError", "Reason", "decode"]


def decode(path: Path, *, pdf_dpi: int = 200) -> tuple[FileType, list[Page]]:
    """Decode `path` into pages, or raise `IngestError` with a reason code."""
    file_type = sniff(path)
    if file_type is FileType.PDF:
        pages = decode_pdf(path, dpi=pdf_dpi)
    elif file_type is FileType.DICOM:
        pages = decode_dicom(path)
    else:
        pages = decode_image(path)
    if not pages:
        raise IngestError(Reason.NOT_ECG, "the file decoded to no pages")
    return file_type, pages
