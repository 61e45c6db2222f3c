"""Turn a file into pages; the file type is sniffed from its bytes, and limits hold before decoding."""

from __future__ import annotations

from pathlib import Path

from ingest.decode.dicom import decode_dicom
from ingest.decode.image import decode_image
from ingest.decode.limits import DecodeLimits
from ingest.decode.pdf import decode_pdf
from ingest.decode.scp_ecg import decode_scp_ecg
from ingest.decode.vendor_xml import decode_vendor_xml
from ingest.page import Page
from ingest.reasons import IngestError, Reason
from ingest.sniff import HEAD_BYTES, VENDOR_XML, FileType, sniff_bytes

__all__ = ["DecodeLimits", "IngestError", "Reason", "decode", "decode_bytes"]
# Fewer pixels than this on a side cannot hold a 12-lead ECG (an A4 page at the lowest PDF DPI, 50, is 413x585);
# such a page, e.g. a PDF whose media box was zeroed, would otherwise reach the cleaning and fail there.
MIN_PAGE_SIDE = 64


def decode_bytes(data: bytes, limits: DecodeLimits | None = None, working_copy: bool = False
                 ) -> tuple[FileType, list[Page]]:
    """Decode a whole file's bytes into pages, or raise `IngestError` with a reason code.

    `working_copy` returns each page as (or close to) the working copy `clean` makes of it, decoded smaller
    where the format allows: intake cleans every page, so the full resolution would be thrown away unseen.
    The limits hold for the file's full declared size all the same.
    """
    limits = limits or DecodeLimits()
    limits.check_file_size(len(data))
    file_type = sniff_bytes(data[:HEAD_BYTES], complete=len(data) <= HEAD_BYTES)
    if file_type is FileType.PDF:
        pages = decode_pdf(data, limits, working_copy)
    elif file_type is FileType.DICOM:
        pages = decode_dicom(data, limits, working_copy)
    elif file_type in VENDOR_XML:
        pages = decode_vendor_xml(data, file_type, limits, working_copy)
    elif file_type is FileType.SCP_ECG:
        pages = decode_scp_ecg(data, limits, working_copy)
    else:
        pages = decode_image(data, file_type, limits, working_copy)
    if not pages:
        raise IngestError(Reason.NOT_ECG, "the file decoded to no pages")
    limits.check_pages(len(pages))
    for page in pages:
        limits.check_pixels(*page.image.shape[:2])
        height, width = page.image.shape[:2]
        if min(height, width) < MIN_PAGE_SIDE:
            raise IngestError(Reason.NOT_ECG, f"a page of {width}x{height} pixels is too small to hold an ECG")
    return file_type, pages


def decode(path: Path, limits: DecodeLimits | None = None, working_copy: bool = False
           ) -> tuple[FileType, list[Page]]:
    """Decode the file at `path`; its size is checked before it is read (`working_copy` as `decode_bytes`)."""
    limits = limits or DecodeLimits()
    limits.check_file_size(path.stat().st_size)
    return decode_bytes(path.read_bytes(), limits, working_copy)
