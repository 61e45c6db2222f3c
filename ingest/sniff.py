"""File type from magic bytes, never from the name: hospitals rename files freely.

Vendor ECG XML is told apart by its root element (after an optional BOM, XML declaration, comments,
processing instructions and a DOCTYPE): `RestingECG` is GE MUSE, `restingecgdata` Philips (Sierra/PhilipsECG),
`AnnotatedECG` in the HL7 v3 namespace an HL7 aECG. Any other root, or a known root in a namespace its
format never uses, is `unsupported_type` with the root named.

SCP-ECG (EN 1064) has no magic at byte 0 (a CRC, then the record size): it is told by section 0's header at
byte 6, section ID 0 with a length of 16 header bytes plus whole 10-byte pointers and a record size that holds
it, and then either the reserved bytes reading "SCPECG" (writers of version 2.0 and later) or, as ecgdatakit's
`can_parse` checks, a first pointer that describes section 0 itself (ID 0 at byte index 7).
"""

from __future__ import annotations

import re
import struct
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
    GE_MUSE = "ge-muse"
    PHILIPS = "philips-xml"
    HL7_AECG = "hl7-aecg"
    SCP_ECG = "scp-ecg"


VENDOR_XML = (FileType.GE_MUSE, FileType.PHILIPS, FileType.HL7_AECG)
HL7_V3 = "urn:hl7-org:v3"
PHILIPS_NS = "http://www3.medical.philips.com"
# root element -> (file type, the namespaces its writers use; "" is none)
XML_ROOTS: dict[str, tuple[FileType, frozenset[str]]] = {
    "RestingECG": (FileType.GE_MUSE, frozenset({""})),
    "restingecgdata": (FileType.PHILIPS, frozenset({"", PHILIPS_NS})),
    "AnnotatedECG": (FileType.HL7_AECG, frozenset({HL7_V3})),
}


_PREFIXES: list[tuple[bytes, FileType]] = [
    (b"%PDF-", FileType.PDF),
    (b"\x89PNG\r\n\x1a\n", FileType.PNG),
    (b"\xff\xd8\xff", FileType.JPEG),
    (b"II*\x00", FileType.TIFF),
    (b"MM\x00*", FileType.TIFF),
    (b"BM", FileType.BMP),
]
HEAD_BYTES = 16384  # XML may put a long comment or DOCTYPE before its root; binary signatures use the first 1024
_BINARY_HEAD = 1024
_PROLOG = re.compile(r"\s*(?:<\?.*?\?>|<!--.*?-->|<!DOCTYPE(?:[^\[>]|\[.*?\])*>)", re.DOTALL)
_ROOT = re.compile(r"<(?:([A-Za-z_][\w.-]*):)?([A-Za-z_][\w.-]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*)")
_XMLNS = re.compile(r"xmlns(?::([A-Za-z_][\w.-]*))?\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")


def _xml_text(head: bytes) -> str | None:
    """The head decoded for reading its prolog, or None when it does not start like XML."""
    if head.startswith(b"\xef\xbb\xbf"):
        text = head[3:].decode("utf-8", errors="replace")
    elif head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head[2:len(head) - len(head) % 2].decode("utf-16-le" if head[0] == 0xFF else "utf-16-be",
                                                        errors="replace")
    elif head.startswith(b"<\x00"):  # UTF-16 without a BOM
        text = head[: len(head) - len(head) % 2].decode("utf-16-le", errors="replace")
    elif head.startswith(b"\x00<"):
        text = head[: len(head) - len(head) % 2].decode("utf-16-be", errors="replace")
    else:
        text = head.decode("latin-1")  # every ASCII-compatible encoding reads its markup the same
    stripped = text.lstrip(" \t\r\n\ufeff")
    return stripped if stripped.startswith("<") and len(stripped) > 1 and (stripped[1] in "?!" or stripped[1].isalpha()
                                                                     or stripped[1] == "_") else None


def sniff_xml(head: bytes, complete: bool = False) -> FileType | None:
    """The vendor ECG type of XML bytes from their root element; None when the bytes do not look like XML.

    `complete` says `head` is the whole file (so a root that never comes means the file ends early).
    """
    text = _xml_text(head)
    if text is None:
        return None
    position = 0
    while match := _PROLOG.match(text, position):
        if match.end() == position:
            break
        position = match.end()
    root = _ROOT.match(text, position + len(text[position:]) - len(text[position:].lstrip()))
    if root is None:
        rest = text[position:].lstrip()
        if complete and (not rest or rest.startswith(("<!--", "<?", "<!DOCTYPE"))):
            raise IngestError(Reason.TRUNCATED, "the XML document ends before its root element")
        raise IngestError(Reason.UNSUPPORTED_TYPE, f"XML-like text without a root element in the first {len(head)} "
                                                   "bytes")
    prefix, name, attributes = root.group(1) or "", root.group(2), root.group(3)
    qualified = f"{prefix}:{name}" if prefix else name
    if name not in XML_ROOTS:
        raise IngestError(Reason.UNSUPPORTED_TYPE, f"XML with root element <{qualified[:60]}> is not an ECG format "
                                                   "we read (GE MUSE, Philips, HL7 aECG)")
    namespaces = {(m.group(1) or ""): (m.group(2) if m.group(2) is not None else m.group(3))
                  for m in _XMLNS.finditer(attributes)}
    namespace = namespaces.get(prefix, "")
    file_type, expected = XML_ROOTS[name]
    if prefix and prefix not in namespaces:
        namespace = f"undeclared prefix {prefix}"
    if namespace not in expected:
        wanted = " or ".join(sorted(n or "no namespace" for n in expected))
        raise IngestError(Reason.UNSUPPORTED_TYPE, f"XML root element <{name}> is in namespace "
                                                   f"'{namespace[:80] or 'none'}', not {wanted}")
    return file_type


_SCP_MAX_POINTERS = 256  # section 0 lists sections 0-11 and a few manufacturer ones; real files hold 12 to 20


def is_scp_ecg(head: bytes) -> bool:
    """SCP-ECG by section 0's header at byte 6 (see the module docstring); needs the first 32 bytes."""
    if len(head) < 32:
        return False
    record_size, _crc, section_id, section_length = struct.unpack_from("<IHHI", head, 2)
    if section_id != 0 or section_length < 26 or (section_length - 16) % 10:
        return False
    if section_length > 16 + 10 * _SCP_MAX_POINTERS or record_size < 6 + section_length:
        return False
    first_id, _, first_index = struct.unpack_from("<HII", head, 22)
    return head[16:22] == b"SCPECG" or (first_id == 0 and first_index == 7)


def sniff_bytes(head: bytes, complete: bool = False) -> FileType:
    """Classify the first bytes of a file; raise `empty` or `unsupported_type` otherwise.

    `complete`: `head` is the whole file. XML needs up to `HEAD_BYTES` to reach its root element.
    """
    if not head:
        raise IngestError(Reason.EMPTY, "file is empty")
    if len(head) >= 132 and head[128:132] == b"DICM":
        return FileType.DICOM
    if is_scp_ecg(head):  # before the prefixes: its first two bytes are a CRC, which may read "BM"
        return FileType.SCP_ECG
    for prefix, file_type in _PREFIXES:
        if head.startswith(prefix):
            return file_type
    xml = sniff_xml(head, complete)
    if xml is not None:
        return xml
    # Some writers put a few bytes of junk before the PDF header; the PDF spec tolerates it.
    if b"%PDF-" in head[:_BINARY_HEAD]:
        return FileType.PDF
    raise IngestError(Reason.UNSUPPORTED_TYPE, "no known file signature in the first bytes")


def sniff(path: Path) -> FileType:
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES + 1)
    return sniff_bytes(head[:HEAD_BYTES], complete=len(head) <= HEAD_BYTES)
