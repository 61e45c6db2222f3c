"""Configured ceilings on what one file may cost to decode; each breach is a quarantine reason."""

from __future__ import annotations

from dataclasses import dataclass

from ingest.reasons import IngestError, Reason


@dataclass(frozen=True)
class DecodeLimits:
    """Checked before pixels are allocated wherever the format says its size up front (bombs never inflate)."""

    max_file_bytes: int = 512 * 2**20
    max_pages: int = 50
    max_page_pixels: int = 80_000_000  # an A4 page at 600 DPI is 35 megapixels
    timeout_s: float = 120.0
    pdf_dpi: int = 200
    allow_permission_only_pdf: bool = False
    max_waveform_samples: int = 10_000_000  # channels x samples in one waveform; a 12-lead 10 s at 1 kHz is 120 000
    max_xml_depth: int = 64  # nesting depth of vendor ECG XML; real exports stay under 20

    def check_waveform(self, channels: int, samples: int) -> None:
        if channels * samples > self.max_waveform_samples:
            raise IngestError(Reason.TOO_LARGE, f"a waveform of {channels} channels x {samples} samples exceeds the "
                                                f"limit of {self.max_waveform_samples} values")

    def check_file_size(self, size: int) -> None:
        if size > self.max_file_bytes:
            raise IngestError(Reason.TOO_LARGE, f"file is {size / 2**20:.1f} MiB, the limit is "
                                                f"{self.max_file_bytes / 2**20:.1f} MiB")

    def check_pages(self, pages: int) -> None:
        if pages > self.max_pages:
            raise IngestError(Reason.TOO_MANY_PAGES, f"{pages} pages, the limit is {self.max_pages}")

    def check_pixels(self, height: int, width: int) -> None:
        if height * width > self.max_page_pixels:
            raise IngestError(Reason.TOO_LARGE, f"a page of {width}x{height} pixels exceeds the limit of "
                                                f"{self.max_page_pixels / 1e6:.0f} megapixels")
