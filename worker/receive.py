"""DICOM network receive: a C-STORE SCP (pynetdicom) that writes each accepted object atomically into an inbox.

A received object takes the same path as a dropped file: the watcher claims it from the inbox. The sender is
answered success (0x0000) only once the object is a whole, fsynced Part 10 file under its final name; any
failure answers a failure status, so the sender still owns the object and sends it again later (the DICOM
contract). Objects arrive in pynetdicom's spool file (the system temporary folder, `TMPDIR`), never whole in
memory; the bytes of one object are counted while they arrive and an association over the size limit is
aborted. Patient identifiers never reach a log line: only SOP class, size and the file name, which is the SOP
Instance UID (digits and dots) or a hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from ingest.correlation import KEY_DIGITS, working_on
from ingest.decode.limits import DecodeLimits
from ingest.files import move, sha256_file
from ingest.reasons import IngestError, Reason
from worker.settings import Settings

log = logging.getLogger(__name__)

# What a hospital sends us: ECG waveforms (a 12-lead also arrives as hemodynamic), pictures of printed ECGs
# (secondary capture, single and multi-frame) and the PDFs ECG management systems export.
ACCEPTED_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG waveform",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "general ECG waveform",
    "1.2.840.10008.5.1.4.1.1.9.1.3": "ambulatory ECG waveform",
    "1.2.840.10008.5.1.4.1.1.9.2.1": "hemodynamic waveform",
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.1": "multi-frame single bit secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "multi-frame grayscale byte secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "multi-frame grayscale word secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.4": "multi-frame true color secondary capture",
    "1.2.840.10008.5.1.4.1.1.104.1": "encapsulated PDF",
}
# Storage statuses (PS3.4 Annex B.2.3).
SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
# Bytes of PDU and DIMSE framing an object of the limit may arrive with on top of its own size.
_FRAMING_ALLOWANCE = 1 << 20
# Free space the spool folder must keep: PDUs already read when an abort is sent are still written.
SPOOL_RESERVE = 8 * 2**20
_UID = re.compile(r"[0-9.]{1,64}")


def configure_pynetdicom() -> None:
    """Spool each received data set to a file (never whole in memory) and keep pynetdicom's own logging from
    writing AE titles or identifiers of requests."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def object_name(sop_instance_uid: str | None, spooled: Path) -> str:
    """The inbox name: the SOP Instance UID where it is one (digits and dots carry no patient data), else the
    sha256 of the bytes, so a malformed UID can never smuggle text into the file system or a log line."""
    uid = str(sop_instance_uid or "").strip()
    if _UID.fullmatch(uid):
        return f"{uid}.dcm"
    digest = hashlib.sha256()
    with open(spooled, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return f"{digest.hexdigest()}.dcm"


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's entry to disk: after it the object or its name survives a power cut."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def keep(spooled: Path, inbox: Path, name: str) -> Path:
    """Make the spooled Part 10 file `inbox/name`, all or nothing.

    `ingest.files.move` renames within one file system, and across file systems copies to a hidden part file
    (which the watcher ignores), fsyncs it and links it under the final name, removing the part on any error;
    it never overwrites (a second object of one name gets a numbered sibling). The spool file is fsynced first
    so a rename carries durable bytes, and the inbox directory after, so the name itself is durable."""
    fsync_path(spooled)
    stored = move(spooled, inbox / name)
    fsync_path(inbox)
    return stored


def failure(status: int, comment: str) -> Dataset:
    """A failure status with an Error Comment (64 characters at most, no patient data) the sender can log."""
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = comment[:64]
    return answer


def refusal_status(error: IngestError) -> int:
    """A limit breach is 'out of resources' (the object may be fine, we will not hold it); anything else
    about the bytes is 'cannot understand'."""
    return OUT_OF_RESOURCES if error.reason in (Reason.TOO_LARGE, Reason.TOO_MANY_PAGES) else CANNOT_UNDERSTAND


def said_safely(error: IngestError) -> str:
    """What a refusal says in the log and to the sender: our own words only. A `corrupt` message quotes
    pydicom's exception, which can quote an element's value (a patient's name)."""
    if error.reason is Reason.CORRUPT:
        return f"{Reason.CORRUPT.value}: the DICOM data cannot be parsed"
    return str(error)


@dataclass
class Receiver:
    """The SCP's state: where objects go, the limits, the bytes each association has sent since its last store
    and the stores being written now (a stop waits for them)."""

    inbox: Path
    limits: DecodeLimits
    spool: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))  # where pynetdicom spools
    arriving: weakref.WeakKeyDictionary[Association, int] = field(default_factory=weakref.WeakKeyDictionary)
    aborting: weakref.WeakSet[Association] = field(default_factory=weakref.WeakSet)
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_data(self, event: Event) -> None:
        """Count an object's bytes while they arrive: past the size limit, or with the spool folder nearly
        full, the association is aborted before the rest is spooled (the sender keeps its object). A spool
        write that met a full disk would kill pynetdicom's reactor thread and leave the sender hanging."""
        with self.lock:
            total = self.arriving.get(event.assoc, 0) + len(event.data)
            self.arriving[event.assoc] = total
            if event.assoc in self.aborting:
                return
            spooling = getattr(getattr(event.assoc.dimse, "message", None), "_data_set_file", None) is not None
            why = self._too_much(total) or (self._spool_short() if spooling else None)
            if why:
                self.aborting.add(event.assoc)
        if why:
            log.warning("receive: association aborted: %s", why)
            event.assoc.abort()

    def _too_much(self, arrived: int) -> str | None:
        if arrived > self.limits.max_file_bytes + _FRAMING_ALLOWANCE:
            return f"more than {self.limits.max_file_bytes / 2**20:.1f} MiB arrived for one object (the limit)"
        return None

    def _spool_short(self) -> str | None:
        """Less than SPOOL_RESERVE free where pynetdicom spools (checked per PDU; a statvfs is microseconds)."""
        stats = os.statvfs(self.spool)
        if stats.f_bavail * stats.f_frsize < SPOOL_RESERVE:
            return f"less than {SPOOL_RESERVE // 2**20} MiB free in the spool folder {self.spool} (TMPDIR)"
        return None

    def on_close(self, event: Event) -> None:
        """A connection closed while an object was still arriving (aborted by us or the sender, or dropped):
        remove its partial spool file, which pynetdicom removes only after a complete store."""
        message = getattr(event.assoc.dimse, "message", None)
        partial = getattr(message, "_data_set_path", None)
        if partial is not None:
            Path(partial).unlink(missing_ok=True)
            log.info("receive: an object that never finished arriving was discarded; its sender keeps it")

    def on_echo(self, event: Event) -> int:
        """Verification: the sender (or `doctor`) asks whether we are here."""
        self._reset(event.assoc)
        return SUCCESS

    def on_store(self, event: Event) -> int | Dataset:
        """One C-STORE: check the spooled object, keep it, answer; success only once it is in the inbox."""
        self._reset(event.assoc)
        with self.lock:
            self.in_flight += 1
        try:
            with working_on(sha256_file(Path(event.dataset_path))[:KEY_DIGITS]):  # the key intake will find
                return self._store(event)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _reset(self, assoc: Association) -> None:
        with self.lock:
            self.arriving[assoc] = 0

    def _store(self, event: Event) -> int | Dataset:
        from ingest.decode.dicom import check_received  # pydicom's parser only where objects arrive

        sop_class = str(event.request.AffectedSOPClassUID)
        kind = ACCEPTED_SOP_CLASSES.get(sop_class)
        if kind is None:
            log.warning("receive: refused SOP class %s: not one we accept", sop_class)
            return SOP_CLASS_NOT_SUPPORTED
        spooled = Path(event.dataset_path)
        size = spooled.stat().st_size
        try:
            self.limits.check_file_size(size)
            check_received(spooled, self.limits)
        except IngestError as exc:
            said = said_safely(exc)
            log.warning("receive: refused %s, %d bytes: %s", kind, size, said)
            return failure(refusal_status(exc), said)
        name = object_name(event.request.AffectedSOPInstanceUID, spooled)
        started = time.monotonic()
        try:
            stored = keep(spooled, self.inbox, name)
        except OSError as exc:  # a full disk, an unwritable inbox: the sender keeps the object and retries
            log.error("receive: could not write %s, %d bytes, as %s: %s", kind, size, name,
                      os.strerror(exc.errno) if exc.errno else type(exc).__name__)
            return failure(OUT_OF_RESOURCES, f"cannot store: {os.strerror(exc.errno) if exc.errno else 'I/O'}")
        log.info("receive: stored %s, %d bytes, as %s in %.0f ms", kind, size, stored.name,
                 (time.monotonic() - started) * 1000)
        return SUCCESS


def build_ae(settings: Settings) -> AE:
    """Our AE: the accepted SOP classes (any transfer syntax pynetdicom knows), Verification, the calling AE
    allow-list, the called AE title check, the timeouts and the association ceiling."""
    from pynetdicom import ALL_TRANSFER_SYNTAXES

    ae = AE(ae_title=settings.receive_ae_title)
    for sop_class in ACCEPTED_SOP_CLASSES:
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.require_called_aet = True
    ae.require_calling_aet = list(settings.receive_allowed_callers)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.receive_timeout
    ae.maximum_associations = settings.receive_max_associations
    return ae


def start(settings: Settings, port: int | None = None) -> tuple[ThreadedAssociationServer, Receiver]:
    """Start listening (non-blocking); the inbox is created if missing."""
    configure_pynetdicom()
    inbox = settings.receive_inbox_dir
    inbox.mkdir(parents=True, exist_ok=True)
    receiver = Receiver(inbox, settings.decode_limits())
    handlers = [(evt.EVT_C_STORE, receiver.on_store), (evt.EVT_C_ECHO, receiver.on_echo),
                (evt.EVT_DATA_RECV, receiver.on_data), (evt.EVT_CONN_CLOSE, receiver.on_close)]
    server = build_ae(settings).start_server(("", port or settings.receive_port), block=False,
                                             evt_handlers=handlers)
    assert server is not None  # non-blocking: pynetdicom hands back the running server
    return server, receiver


def stop(server: ThreadedAssociationServer, receiver: Receiver, grace_s: float) -> int:
    """Stop accepting, let stores being written finish (up to `grace_s`), then abort what is left.

    An object still arriving when the associations are aborted was never answered: its sender keeps it.
    Returns how many associations were aborted."""
    associations = server.active_associations
    server.shutdown()
    deadline = time.monotonic() + grace_s
    while receiver.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    aborted = 0
    for assoc in dict.fromkeys(associations + server.active_associations):  # each once
        if assoc.is_alive() and not assoc.is_released:
            assoc.abort()
            aborted += 1
    return aborted


DOCTOR_AE_TITLE = "ECGINTAKE-DR"  # the calling AE title of `doctor`'s C-ECHO; an allow-list may name it
EchoAnswer = Literal["answered", "rejected", "silent"]


def echo(ae_title: str, port: int, host: str = "127.0.0.1", timeout: float = 5) -> EchoAnswer:
    """C-ECHO to an AE: `answered` (status 0x0000), `rejected` (a DICOM AE refused the association, e.g. our
    own receiver with an allow-list that does not name the caller) or `silent` (no DICOM answer at all)."""
    configure_pynetdicom()
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # "connection refused" is an answer here, not an error
    scu = AE(ae_title=DOCTOR_AE_TITLE)
    scu.add_requested_context(Verification)
    scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = timeout
    scu.connection_timeout = timeout
    assoc = scu.associate(host, port, ae_title=ae_title)
    if assoc.is_rejected:
        return "rejected"
    if not assoc.is_established:
        return "silent"
    try:
        status = assoc.send_c_echo()
        return "answered" if int(status.get("Status", -1)) == SUCCESS else "rejected"
    finally:
        assoc.release()
