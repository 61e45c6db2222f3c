"""The fixed set of reasons a file can be quarantined for, and the error that carries one."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Quarantine reason codes; stable strings that land in `.reason.json` files and the database."""

    EMPTY = "empty"
    TRUNCATED = "truncated"
    UNSUPPORTED_TYPE = "unsupported_type"
    ENCRYPTED = "encrypted"
    NOT_ECG = "not_ecg"
    TOO_LARGE = "too_large"
    TOO_MANY_PAGES = "too_many_pages"
    DECODE_TIMEOUT = "decode_timeout"
    CORRUPT = "corrupt"
    INTERNAL_ERROR = "internal_error"


DESCRIPTIONS: dict[Reason, str] = {
    Reason.EMPTY: "the file has no bytes",
    Reason.TRUNCATED: "the file ends before its format says it should",
    Reason.UNSUPPORTED_TYPE: "the bytes are not a PDF, DICOM, image, vendor ECG XML or SCP-ECG format we read",
    Reason.ENCRYPTED: "the document is encrypted or password-protected",
    Reason.NOT_ECG: "the file is readable but holds no ECG",
    Reason.TOO_LARGE: "the file or one of its pages exceeds a configured size limit",
    Reason.TOO_MANY_PAGES: "the document has more pages than the configured maximum",
    Reason.DECODE_TIMEOUT: "decoding took longer than the configured limit",
    Reason.CORRUPT: "the file claims a known format but its contents cannot be decoded",
    Reason.INTERNAL_ERROR: "an unexpected error in ecg-intake itself; the file is kept for a retry",
}


class IngestError(Exception):
    """A file that cannot become pages, with a reason code a machine can act on."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


class InstallationError(Exception):
    """The machine, not the file, is at fault (a missing tool, an unwritable folder, an unreachable database).

    Never a quarantine reason: the file stays claimed and is retried once the installation is fixed.
    """
