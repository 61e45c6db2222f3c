"""File type from magic bytes, never from the name: hospitals rename files freely."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from ingest.reasons import IngestError, Reason


class FileType(StrEnum):
    PDF = "pdf"
    DICOM = "dicom"
    PNG = "png"
    JPEG = "jpeg"
    TIFF = "tiff"
    BMP = "bmp"


_PREFIXES: list[tuple[bytes, FileType]] = [
    (b"%PDF-", FileType.PDF),
    (b"\x89PNG\r\n\x1a\n", FileType.PNG),
    (b"\xff\xd8\xff", FileType.JPEG),
    (b"II*\x00", FileType.TIFF),
    (b"MM\x00*", FileType.TIFF),
    (b"BM", FileType.BMP),
]
_HEAD_BYTES = 1024


def sniff_bytes(head: bytes) -> FileType:
    """Classify the first bytes of a file; raise `empty` or `unsupported_type` otherwise."""
    if not head:
        raise IngestError(Reason.EMPTY, "file is empty")
    if len(head) >= 132 and head[128:132] == b"DICM":
        return FileType.DICOM
    for prefix, file_type in _PREFIXES:
        if head.startswith(prefix):
            return file_type
    # Some writers put a few bytes of junk before the PDF header; the PDF spec tolerates it.
    if b"%PDF-" in head:
        return FileType.PDF
    raise IngestError(Reason.UNSUPPORTED_TYPE, "no known file signature in the first bytes")


def sniff(path: Path) -> FileType:
    with open(path, "rb") as handle:
        return sniff_bytes(handle.read(_HEAD_BYTES))
