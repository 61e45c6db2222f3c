"""Hostile vendor XML refused before a parser sees it: one cheap expat pass over the bytes.

`normalise` decodes the document the way the XML specification says (a BOM wins over the declaration;
without one, the declared encoding, then UTF-8, then Windows-1252/Latin-1 for files whose declaration
lies) and re-encodes it as UTF-8 with a matching declaration, so the parser after us never guesses.

`prepass` then parses it once with expat and no tree: a DTD that declares an entity (billion laughs,
external entities) is `corrupt` ("XML entity declarations are not allowed"), nothing external is ever
fetched, nesting deeper than `limits.max_xml_depth` is `too_large`, a document that ends early (unclosed
root, unclosed token, partial character) is `truncated`, any other malformed XML `corrupt`. On the way it
counts what each waveform holds, so `limits.check_waveform` holds before any Base64 or digit list is
decoded: MUSE from `LeadSampleCountTotal` and the Base64 length, Philips from `parsedwaveforms`'
duration, rate and lead count (and XLI's decompressed size, walked without building it), aECG from the
number of values in each `digits`.
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.parsers.expat as expat
from dataclasses import dataclass, field

import numpy as np

from ingest.decode.limits import DecodeLimits
from ingest.reasons import IngestError, Reason

_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*?\?>")
_DECLARED = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._:-]+)[\"']")
_TEXT_DECLARATION = re.compile(r"^\s*<\?xml[^>]*?\?>")
_UTF8_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>'
_ENDS_EARLY = {expat.errors.codes[e] for e in (expat.errors.XML_ERROR_NO_ELEMENTS,
                                               expat.errors.XML_ERROR_UNCLOSED_TOKEN,
                                               expat.errors.XML_ERROR_PARTIAL_CHAR,
                                               expat.errors.XML_ERROR_UNCLOSED_CDATA_SECTION)}
_ENTITIES = "XML entity declarations are not allowed"
_XLI_CODE_BITS = 10


def _decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8")
    for bom, codec in ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if data.startswith(bom):
            return data[2:].decode(codec)
    if data.startswith(b"<\x00"):
        return data.decode("utf-16-le")
    if data.startswith(b"\x00<"):
        return data.decode("utf-16-be")
    declared = _DECLARED.match(data)
    encoding = declared.group(1).decode("ascii").lower() if declared else None
    if encoding and ("16" in encoding or "32" in encoding or "ucs" in encoding):
        encoding = None  # a two-byte encoding declared over ASCII-compatible bytes: the declaration lies
    for candidate in (encoding, "utf-8", "cp1252"):
        if candidate:
            try:
                return data.decode(candidate)
            except (UnicodeDecodeError, LookupError):
                continue
    return data.decode("latin-1")


def normalise(data: bytes) -> bytes:
    """The document as UTF-8 with a UTF-8 declaration (unchanged bytes when it already is)."""
    declared = _DECLARED.match(data)
    plain_utf8 = not data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"<\x00", b"\x00<")) and (
        declared is None or declared.group(1).lower() in (b"utf-8", b"utf8", b"us-ascii", b"ascii"))
    if plain_utf8:
        try:
            data.decode("utf-8")
            return data
        except UnicodeDecodeError:
            pass
    try:
        text = _decode(data)
    except UnicodeDecodeError as exc:
        if exc.end >= len(exc.object) - 1 and "truncated" in exc.reason:
            raise IngestError(Reason.TRUNCATED, "the XML document ends inside a character") from exc
        raise IngestError(Reason.CORRUPT, f"the XML bytes are not valid in their encoding ({exc.reason})") from exc
    body = _TEXT_DECLARATION.sub("", text, count=1)
    try:
        return _UTF8_DECLARATION + body.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from a broken UTF-16 pair
        raise IngestError(Reason.CORRUPT, "the XML text holds an unpaired UTF-16 surrogate") from exc


@dataclass
class XmlCounts:
    """What the pre-pass learned; `waveforms` are (channels, samples) pairs already checked against the limits."""

    root: str = ""
    elements: int = 0
    max_depth: int = 0
    waveforms: list[tuple[int, int]] = field(default_factory=list)


class _Refused(Exception):
    def __init__(self, error: IngestError) -> None:
        super().__init__(error.message)
        self.error = error


def _token_count(chunks: list[str]) -> int:
    """Whitespace-separated values in the text, without splitting it into strings."""
    raw = np.frombuffer("".join(chunks).encode("ascii", errors="replace"), dtype=np.uint8)
    if raw.size == 0:
        return 0
    space = (raw == 32) | (raw == 9) | (raw == 10) | (raw == 13)
    return int((~space[0]) + np.count_nonzero(space[:-1] & ~space[1:]))


def xli_output_bytes(payload: bytes, cap: int) -> int:
    """Bytes XLI's LZW would produce from `payload`, walked on string lengths only; stops past `cap`.

    A 10-bit LZW code can stand for up to ~770 bytes, so a small XLI chunk can inflate several hundred
    fold; ecgdatakit decompresses every chunk in full before it looks at the declared sample count.
    """
    total, offset = 0, 0
    while offset + 8 <= len(payload):
        size = int.from_bytes(payload[offset:offset + 4], "little", signed=True)
        offset += 8
        if size <= 0 or size > len(payload) - offset:
            return total  # ecgdatakit reports the broken chunk itself
        chunk = np.frombuffer(payload, dtype=np.uint8, count=size, offset=offset)
        offset += size
        bits = np.unpackbits(chunk)
        usable = bits.size // _XLI_CODE_BITS * _XLI_CODE_BITS
        codes = (bits[:usable].reshape(-1, _XLI_CODE_BITS).astype(np.int32)
                 @ (1 << np.arange(_XLI_CODE_BITS - 1, -1, -1))).tolist()
        lengths = [1] * 256
        max_code = (1 << _XLI_CODE_BITS) - 2
        previous = 0
        for code in codes:
            if code > max_code:
                break
            if code < len(lengths):
                length = lengths[code]
            elif previous:
                length = previous + 1
            else:
                break
            if previous and len(lengths) <= max_code:
                lengths.append(previous + 1)
            previous = length
            total += length
            if total > cap:
                return total
    return total


class _Pass:
    """expat handlers: depth, entity refusal and the waveform counts of the three formats."""

    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        self.counts = XmlCounts()
        self.depth = 0
        self.path: list[str] = []
        self.text: list[str] | None = None
        self.attributes: dict[str, str] = {}
        self.lead_bound: list[int] = []  # MUSE: per LeadData of the current Waveform
        self.lead: dict[str, str] = {}
        self.sequences: list[int] = []  # aECG: value count per sequence of the current sequenceSet

    def install(self, parser: expat.XMLParserType) -> None:
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.CharacterDataHandler = self.characters
        parser.EntityDeclHandler = self.entity
        parser.UnparsedEntityDeclHandler = self.entity
        parser.ExternalEntityRefHandler = self.external
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.buffer_text = True
        parser.buffer_size = 1 << 20

    def entity(self, *_: object) -> None:
        raise _Refused(IngestError(Reason.CORRUPT, f"{_ENTITIES}: the DTD declares an entity"))

    def external(self, *_: object) -> int:
        raise _Refused(IngestError(Reason.CORRUPT, f"{_ENTITIES}: the document refers to an external entity"))

    def start(self, name: str, attributes: dict[str, str]) -> None:
        self.depth += 1
        self.counts.elements += 1
        if self.depth > self.limits.max_xml_depth:
            raise _Refused(IngestError(Reason.TOO_LARGE, f"XML nested deeper than {self.limits.max_xml_depth} "
                                                         "elements"))
        self.counts.max_depth = max(self.counts.max_depth, self.depth)
        local = name.rsplit(" ", 1)[-1]
        if self.depth == 1:
            self.counts.root = local
        self.path.append(local)
        if local in ("WaveFormData", "digits", "parsedwaveforms", "LeadSampleCountTotal", "LeadSampleSize"):
            self.text = []
            self.attributes = attributes
        elif local == "Waveform":
            self.lead_bound = []
        elif local == "LeadData":
            self.lead = {}
        elif local == "sequenceSet":
            self.sequences = []

    def characters(self, data: str) -> None:
        if self.text is not None:
            self.text.append(data)

    def end(self, name: str) -> None:
        local = self.path.pop()
        self.depth -= 1
        text, self.text = self.text, None
        if local in ("LeadSampleCountTotal", "LeadSampleSize"):
            self.lead[local] = "".join(text or []).strip()
        elif local == "WaveFormData":
            self.lead["base64_chars"] = str(sum(len(t) for t in text or []))
        elif local == "LeadData":
            size = _int(self.lead.get("LeadSampleSize")) or 2
            stored = int(_int(self.lead.get("base64_chars")) or 0) * 3 // 4 // max(1, min(size, 4))
            self.lead_bound.append(max(stored, _int(self.lead.get("LeadSampleCountTotal")) or 0))
            self._check(len(self.lead_bound), max(self.lead_bound))
        elif local == "Waveform" and self.lead_bound:
            self.counts.waveforms.append((len(self.lead_bound), max(self.lead_bound)))
        elif local == "digits":
            self.sequences.append(_token_count(text or []))
            self._check(len(self.sequences), max(self.sequences))
        elif local == "sequenceSet" and self.sequences:
            self.counts.waveforms.append((len(self.sequences), max(self.sequences)))
        elif local == "parsedwaveforms":
            self._philips(self.attributes, text or [])

    def _check(self, channels: int, samples: int) -> None:
        try:
            self.limits.check_waveform(channels, samples)
        except IngestError as error:
            raise _Refused(error) from None

    def _philips(self, attributes: dict[str, str], text: list[str]) -> None:
        rate = _float(attributes.get("samplespersecond")) or 0.0
        duration_ms = _float(attributes.get("durationperchannel")) or 0.0
        leads = _int(attributes.get("numberofleads")) or len(attributes.get("leadlabels", "").split()) or 12
        samples = round(duration_ms * rate / 1000)
        self._check(leads, samples)
        self.counts.waveforms.append((leads, samples))
        compression = (attributes.get("compression") or attributes.get("compressmethod") or "").upper()
        if compression == "XLI" and (attributes.get("compressflag", "").lower() not in ("false", "0", "no")):
            try:
                payload = base64.b64decode("".join("".join(text).split()), validate=True)
            except (binascii.Error, ValueError):
                return  # the parser names the bad Base64
            # each lead's chunk unpacks to two bytes per sample; slack for padding and for writers that store
            # a few more channels (15 or 16) than the 12 the header names
            channels = max(leads, 16)
            cap = 2 * channels * max(samples, 1) + 1024 * channels
            cap = min(cap, 2 * self.limits.max_waveform_samples + 1024 * channels)
            if xli_output_bytes(payload, cap) > cap:
                raise _Refused(IngestError(Reason.TOO_LARGE, "the XLI-compressed waveform inflates beyond its "
                                                             f"declared {leads} leads x {samples} samples"))


def _int(text: str | None) -> int | None:
    value = _float(text)
    return int(value) if value is not None else None


def _float(text: str | None) -> float | None:
    try:
        value = float((text or "").strip().replace(",", "."))
    except ValueError:
        return None
    return value if np.isfinite(value) and value >= 0 else None


def prepass(data: bytes, limits: DecodeLimits) -> XmlCounts:
    """Parse `data` (normalised UTF-8) once without a tree; raise `IngestError` for anything hostile or broken."""
    handlers = _Pass(limits)
    parser = expat.ParserCreate(encoding="UTF-8", namespace_separator=" ")
    handlers.install(parser)
    try:
        parser.Parse(data, True)
    except _Refused as refused:
        raise refused.error from None
    except expat.ExpatError as exc:
        message = expat.ErrorString(exc.code) or str(exc)
        if exc.code in _ENDS_EARLY:
            raise IngestError(Reason.TRUNCATED, f"the XML document ends early ({message})") from None
        raise IngestError(Reason.CORRUPT, f"malformed XML ({message}, line {exc.lineno})") from None
    except RecursionError:
        raise IngestError(Reason.TOO_LARGE, "XML nested too deeply") from None
    return handlers.counts
