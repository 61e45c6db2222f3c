"""Turn a file into pages; the file type is sniffed from its bytes, and limits hold before decoding."""

from __future__ import annotations

from pathlib import Path

from ingest.decode.dicom import decode_dicom
from ingest.decode.image import decode_image
from ingest.decode.limits import DecodeLimits
from ingest.decode.pdf import decode_pdf
from ingest.page import Page
from ingest.reasons import IngestError, Reason
from ingest.sniff import FileType, sniff_bytes

__all__ = ["DecodeLimits", "IngestError", "Reason", "decode", "decode_bytes"]


def decode_bytes(data: bytes, limits: DecodeLimits | None = None) -> tuple[FileType, list[Page]]:
    """Decode a whole file's bytes into pages, or raise `IngestError` with a reason code."""
    limits = limits or DecodeLimits()
    limits.check_file_size(len(data))
    file_type = sniff_bytes(data[:1024])
    if file_type is FileType.PDF:
        pages = decode_pdf(data, limits)
    elif file_type is FileType.DICOM:
        pages = decode_dicom(data, limits)
    else:
        pages = decode_image(data, file_type, limits)
    if not pages:
        raise IngestError(Reason.NOT_ECG, "the file decoded to no pages")
    limits.check_pages(len(pages))
    for page in pages:
        limits.check_pixels(*page.image.shape[:2])
    return file_type, pages


def decode(path: Path, limits: DecodeLimits | None = None) -> tuple[FileType, list[Page]]:
    """Decode the file at `path`; its size is checked before it is read."""
    limits = limits or DecodeLimits()
    limits.check_file_size(path.stat().st_size)
    return decode_bytes(path.read_bytes(), limits)
