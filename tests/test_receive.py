"""`ecg-intake receive` as a real process, spoken to by pynetdicom's own SCU over a real association.

One receiver serves the whole module (its inbox on a small tmpfs, so a full disk can be made); the last test runs
`ecg-intake run --once` on that inbox and finds every stored object classified in the database.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import CTImageStorage, Verification

from tests.helpers.cli import Cli
from worker.receive import ACCEPTED_SOP_CLASSES

CALLER = "TESTSCU"
OUR_TITLE = "ECGTEST"
INBOX_MIB = 24


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Receiver:
    cli: Cli
    process: subprocess.Popen
    port: int
    inbox: Path
    home: Path
    log: Path
    spool: Path
    on_tmpfs: bool  # the inbox is a small file system of its own, so a full disk can be made

    def log_text(self) -> str:
        """The log with rich's line wrapping undone (words joined by single spaces)."""
        return " ".join(self.log.read_text(errors="replace").split())

    def stored(self) -> list[Path]:
        """Files in the inbox the watcher would claim (not hidden part files)."""
        return sorted(p for p in self.inbox.iterdir() if p.is_file() and not p.name.startswith("."))


def _mount_small_tmpfs(folder: Path) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={INBOX_MIB}m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    return mounted.returncode == 0


@pytest.fixture(scope="module")
def receiver(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """The real `ecg-intake receive`, allow-list set, limits low enough to breach; answered C-ECHO before use."""
    root = tmp_path_factory.mktemp("receive")
    home, inbox, spool, port = root / "home", root / "inbox", root / "spool", _free_port()
    on_tmpfs = _mount_small_tmpfs(inbox) and _mount_small_tmpfs(spool)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_INTAKE_")}
    env.update({
        "ECG_INTAKE_HOME": str(home), "ECG_INTAKE_BUNDLE": str(bundle_dir),
        "ECG_INTAKE_ENGINE_CACHE": str(bundle_dir.parent / "engine-cache"),
        "ECG_INTAKE_STABLE_SECONDS": "0.5", "ECG_INTAKE_POLL_INTERVAL": "0.2", "ECG_INTAKE_TORCH_THREADS": "2",
        "ECG_INTAKE_INGEST_CONCURRENCY": "1", "PYTHONUNBUFFERED": "1",
        "TMPDIR": str(spool),  # where pynetdicom spools objects while they arrive
        "ECG_INTAKE_INBOXES": json.dumps([str(inbox)]),  # watched by `run`: doctor has no warning for it
        "ECG_INTAKE_RECEIVE_ALLOWED_CALLERS": f'["{CALLER}", "ECGINTAKE-DR"]',
        "ECG_INTAKE_RECEIVE_MAX_ASSOCIATIONS": "4", "ECG_INTAKE_RECEIVE_TIMEOUT": "20",
        "ECG_INTAKE_MAX_FILE_MB": "8", "ECG_INTAKE_MAX_WAVEFORM_SAMPLES": "200000",
    })
    cli = Cli(env, root)
    log = root / "receive.log"
    process = cli.popen("receive", "--ae-title", OUR_TITLE, "--port", str(port), "--inbox", str(inbox), log=log)
    found = Receiver(cli, process, port, inbox, home, log, spool, on_tmpfs)
    try:
        deadline = time.monotonic() + 60
        while _echo(port) != 0x0000:
            assert process.poll() is None, f"receive exited {process.returncode}:\n{found.log_text()}"
            assert time.monotonic() < deadline, f"receive never answered C-ECHO:\n{found.log_text()}"
            time.sleep(0.2)
        yield found
    finally:
        process.terminate()
        process.wait(timeout=30)
        for folder in (inbox, spool):
            subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


def _scu(title: str = CALLER, *contexts: str) -> AE:
    ae = AE(ae_title=title)
    for context in contexts or (*ACCEPTED_SOP_CLASSES, Verification):
        ae.add_requested_context(context)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    return ae


def _echo(port: int) -> int | None:
    assoc = _scu(CALLER, Verification).associate("127.0.0.1", port, ae_title=OUR_TITLE)
    if not assoc.is_established:
        return None
    try:
        return int(assoc.send_c_echo().get("Status", -1))
    finally:
        assoc.release()


def _store(port: int, *objects: pydicom.Dataset | Path) -> list[pydicom.Dataset]:
    """Each object stored over one association; the response datasets (Status, ErrorComment)."""
    assoc = _scu().associate("127.0.0.1", port, ae_title=OUR_TITLE)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(obj) for obj in objects]
    finally:
        if assoc.is_established:
            assoc.release()


def _waveform(**changes: object) -> pydicom.Dataset:
    """pydicom's real 12-lead ECG (ORIGINAL rhythm beside DERIVED median beats), as a new instance."""
    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm", download=False))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for key, value in changes.items():
        setattr(ds, key, value)
    return ds


@pytest.fixture(scope="module")
def page_objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A secondary capture and an encapsulated PDF of one drawn page, as the synthetic writers make them."""
    from model_training.synth.dicom_out import write_encapsulated_pdf, write_secondary_capture
    from model_training.synth.paper import render_page
    from model_training.synth.signals import generate_record

    folder = tmp_path_factory.mktemp("objects")
    record = generate_record(5)
    image, _ = render_page(record, 5, "light", dpi=100)
    return {"sc": write_secondary_capture(record, image, folder / "sc.dcm"),
            "pdf": write_encapsulated_pdf(record, image, 100, folder / "pdf.dcm")}


def test_echo_answers_success(receiver: Receiver) -> None:
    assert _echo(receiver.port) == 0x0000


def test_an_unknown_calling_ae_title_is_rejected_at_association(receiver: Receiver) -> None:
    seen: list = []
    ae = _scu("INTRUDER", Verification)
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title=OUR_TITLE,
                         evt_handlers=[(evt.EVT_ACSE_RECV, lambda event: seen.append(event.primitive))])
    assert assoc.is_rejected
    reject = seen[-1]
    # rejected-permanent, by the service user, calling AE title not recognised (PS3.8 9.3.4)
    assert (reject.result, reject.result_source, reject.diagnostic) == (0x01, 0x01, 0x03)

    seen.clear()
    assoc = _scu(CALLER, Verification).associate("127.0.0.1", receiver.port, ae_title="SOMEONEELSE",
                                                 evt_handlers=[(evt.EVT_ACSE_RECV,
                                                                lambda event: seen.append(event.primitive))])
    assert assoc.is_rejected and seen[-1].diagnostic == 0x07  # called AE title not recognised


def test_a_refused_sop_class_is_rejected_at_the_presentation_context(receiver: Receiver) -> None:
    assoc = _scu(CALLER, CTImageStorage, Verification).associate("127.0.0.1", receiver.port, ae_title=OUR_TITLE)
    try:
        assert assoc.is_established
        refused = [cx for cx in assoc.rejected_contexts if cx.abstract_syntax == CTImageStorage]
        assert len(refused) == 1 and refused[0].result == 0x03  # abstract syntax not supported
        ct = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
        with pytest.raises(ValueError, match="No presentation context"):
            assoc.send_c_store(ct)
    finally:
        assoc.release()


def test_a_store_of_a_class_we_do_not_accept_answers_0x0122(receiver: Receiver) -> None:
    """A sender that puts a CT object on a context accepted for another class (low-level, as a broken SCU would)."""
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import encode

    before = receiver.stored()
    scu = AE(ae_title=CALLER)
    scu.add_requested_context("1.2.840.10008.5.1.4.1.1.7", ImplicitVRLittleEndian)
    answers: list = []  # the SCU's own dispatch drops a response it did not ask for through send_c_store
    assoc = scu.associate("127.0.0.1", receiver.port, ae_title=OUR_TITLE,
                          evt_handlers=[(evt.EVT_DIMSE_RECV, lambda event: answers.append(event.message))])
    try:
        context = assoc.accepted_contexts[0]
        ct = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
        request = C_STORE()
        request.MessageID, request.Priority = 7, 2
        request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = CTImageStorage, ct.SOPInstanceUID
        request.DataSet = BytesIO(encode(ct, True, True))
        assoc.dimse.send_msg(request, context.context_id)
        deadline = time.monotonic() + 20
        while not answers and time.monotonic() < deadline:
            time.sleep(0.05)
        assert answers and answers[0].command_set.Status == 0x0122
    finally:
        assoc.release()
    assert receiver.stored() == before


def test_a_truncated_object_is_refused_and_nothing_is_written(receiver: Receiver, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    whole = tmp_path / "whole.dcm"
    ecg = _waveform()
    ecg.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian  # what the association accepted: sent unconverted
    ecg.save_as(whole, enforce_file_format=True)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # ends inside the waveform samples
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the bytes as they are
    before = receiver.stored()
    (status,) = _store(receiver.port, cut)
    assert 0xC000 <= status.Status <= 0xCFFF, hex(status.Status)
    assert "truncated" in status.get("ErrorComment", "")
    assert receiver.stored() == before and not [p for p in receiver.inbox.iterdir() if p.name.startswith(".")]


def test_limits_are_enforced_before_anything_is_kept(receiver: Receiver, page_objects: dict[str, Path]) -> None:
    before = receiver.stored()
    declared = _waveform()
    declared.WaveformSequence[0].NumberOfWaveformSamples = 1_000_000  # a header that declares a bomb
    (status,) = _store(receiver.port, declared)
    assert status.Status == 0xA700 and "too_large" in status.ErrorComment

    huge = pydicom.dcmread(page_objects["sc"])  # 12 MiB of pixels against a limit of 8 MiB
    huge.SOPInstanceUID = huge.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    huge.Rows, huge.Columns = 2048, 2048
    huge.PixelData = bytes(2048 * 2048 * 3)
    assoc = _scu().associate("127.0.0.1", receiver.port, ae_title=OUR_TITLE)
    assert assoc.is_established
    status = assoc.send_c_store(huge)
    assert "Status" not in status, status  # aborted while the bytes arrived: never answered
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:  # the requestor's thread hears the A-ABORT
        time.sleep(0.05)
    assert assoc.is_aborted
    assert receiver.stored() == before
    assert "association aborted" in receiver.log_text()
    deadline = time.monotonic() + 10
    while "never finished arriving" not in receiver.log_text():  # its partial spool file removed
        assert time.monotonic() < deadline, receiver.log_text()
        time.sleep(0.05)


def _fill(folder: Path, leave: int = 0) -> Path:
    """A hidden file (never claimed) that fills `folder`'s file system up to `leave` bytes; unbuffered, so a
    full disk raises at the write that met it."""
    filler = folder / ".filler"
    chunk = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                stats = os.statvfs(folder)
                if leave and stats.f_bavail * stats.f_frsize <= leave + len(chunk):
                    break
                handle.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_answers_out_of_resources_and_leaves_nothing(receiver: Receiver,
                                                                  page_objects: dict[str, Path]) -> None:
    if not receiver.on_tmpfs:
        pytest.skip("cannot mount a size-limited tmpfs for the receive inbox")
    before = receiver.stored()
    filler = _fill(receiver.inbox)
    try:
        (status,) = _store(receiver.port, page_objects["sc"])
        assert status.Status == 0xA700 and "No space left" in status.ErrorComment
        assert receiver.stored() == before
        assert [p.name for p in receiver.inbox.iterdir() if p.name.startswith(".")] == [".filler"]  # no part file
        assert "could not write" in receiver.log_text()
    finally:
        filler.unlink()


def test_a_nearly_full_spool_aborts_the_association_and_leaves_nothing(receiver: Receiver,
                                                                       page_objects: dict[str, Path]) -> None:
    """Objects are spooled while they arrive; a spool that would fill aborts cleanly (the sender keeps the object)
    instead of a write error killing pynetdicom's reactor and leaving the sender waiting."""
    if not receiver.on_tmpfs:
        pytest.skip("cannot mount a size-limited tmpfs for the receive inbox")
    before = receiver.stored()
    filler = _fill(receiver.spool, leave=9 * 2**20)  # 1 MiB above the reserve; the capture is 2.7 MiB
    try:
        assoc = _scu().associate("127.0.0.1", receiver.port, ae_title=OUR_TITLE)
        assert assoc.is_established
        status = assoc.send_c_store(page_objects["sc"])
        assert "Status" not in status, status
        deadline = time.monotonic() + 10
        while "never finished arriving" not in receiver.log_text().split("spool folder")[-1]:
            assert time.monotonic() < deadline, receiver.log_text()
            time.sleep(0.05)
        assert receiver.stored() == before and [p.name for p in receiver.spool.iterdir()] == [".filler"]
    finally:
        filler.unlink()
    assert _echo(receiver.port) == 0x0000  # the receiver itself is fine


def test_several_associations_store_at_once(receiver: Receiver) -> None:
    objects = [[_waveform() for _ in range(2)] for _ in range(3)]
    answers: dict[int, list[int]] = {}

    def send(index: int) -> None:
        answers[index] = [int(status.Status) for status in _store(receiver.port, *objects[index])]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == {i: [0, 0] for i in range(3)}
    names = {p.name for p in receiver.stored()}
    assert all(f"{ds.SOPInstanceUID}.dcm" in names for group in objects for ds in group)


def test_stored_objects_are_part10_files_that_run_classifies(receiver: Receiver,
                                                            page_objects: dict[str, Path]) -> None:
    from sqlalchemy import create_engine, text

    from ingest.files import sha256_file
    from ingest.sniff import sniff
    from worker.settings import embedded_database_url

    ecg = _waveform()
    statuses = _store(receiver.port, ecg, page_objects["sc"], page_objects["pdf"])
    assert [int(s.Status) for s in statuses] == [0, 0, 0]
    stored = receiver.stored()
    ecg_file = receiver.inbox / f"{ecg.SOPInstanceUID}.dcm"
    assert ecg_file in stored
    again = pydicom.dcmread(ecg_file)  # a Part 10 file: preamble, DICM, file meta
    assert again.file_meta.MediaStorageSOPInstanceUID == ecg.SOPInstanceUID and again.PatientID == ecg.PatientID
    assert all(sniff(path).value == "dicom" for path in stored)
    assert ecg.PatientID not in receiver.log_text() and str(ecg.PatientName) not in receiver.log_text()

    hashes = {sha256_file(path) for path in stored}
    cli = receiver.cli
    result = cli("run", "--inbox", str(receiver.inbox), "--once", timeout=240)
    assert f"claimed {len(stored)} file(s)" in result.stdout + result.stderr
    engine = create_engine(embedded_database_url(receiver.home))
    with engine.connect() as conn:
        documents = dict(conn.execute(text("select sha256, status from documents")).all())
        predicted = {row[0] for row in conn.execute(text(
            "select distinct d.sha256 from documents d join pages p on p.document_id = d.id "
            "join predictions r on r.page_id = p.id"))}
    assert set(documents) == hashes and set(documents.values()) == {"done"}, documents
    assert predicted == hashes


def _doctor(receiver: Receiver, port: int) -> dict[str, dict[str, str]]:
    """`doctor --json`'s checks by name, told our port and AE title."""
    cli = Cli({**receiver.cli.env, "ECG_INTAKE_RECEIVE_PORT": str(port), "ECG_INTAKE_RECEIVE_AE_TITLE": OUR_TITLE},
              receiver.cli.cwd)
    report = json.loads(cli("doctor", "--json", check=False).stdout)
    return {check["name"]: check for check in report["checks"]}


def test_doctor_tells_a_running_receiver_from_a_squatted_port(receiver: Receiver) -> None:
    checks = _doctor(receiver, receiver.port)
    assert checks["receive port"]["status"] == "ok" and "answers C-ECHO" in checks["receive port"]["detail"]
    assert checks["receive callers"]["status"] == "ok" and checks["receive inbox"]["status"] == "ok"
    from worker.doctor import check_receive_port  # the same check in this process: one doctor run is enough
    from worker.settings import Settings

    with socket.socket() as squatter:  # listens, never speaks DICOM
        squatter.bind(("", 0))
        squatter.listen()
        squatted = check_receive_port(Settings(receive_port=squatter.getsockname()[1], receive_ae_title=OUR_TITLE))
    assert squatted.status == "fail" and "does not answer C-ECHO" in squatted.detail
    free = check_receive_port(Settings(receive_port=_free_port()))
    assert free.status == "ok" and "receiver not running" in free.detail


def test_sigterm_stops_the_receiver_cleanly(receiver: Receiver) -> None:
    """Last in the module: the shared receiver is stopped here."""
    assert _echo(receiver.port) == 0x0000
    receiver.process.send_signal(signal.SIGTERM)
    assert receiver.process.wait(timeout=30) == 0
    assert "receiver stopped" in receiver.log_text()
    assert _echo(receiver.port) is None
