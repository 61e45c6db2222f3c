"""Hostile inbox contents through the whole service (`ecg-intake run --once`, embedded default): file names
built to break shells, encodings and length limits; links, hard links, FIFOs and hidden files; and files that
carry patient identifiers, with every log line of a DEBUG run searched for them.

The decision on links: ecg-intake claims only regular files. A symbolic link (to a file, a folder, outside the
inbox or inside it, dangling) and a special file (FIFO, socket, device) is skipped with one logged warning per
process, never followed, moved or deleted; the link and its target stay exactly as they were. A hard link is a
regular file in the inbox and is processed like one; its other names are untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import cv2
import pydicom
import pytest
from sqlalchemy import select

from ingest.files import NAME_MAX
from model_training.synth.samples import reference_dicom
from tests.helpers.cli import Cli
from tests.helpers.inputs import reference_page, vector_pdf
from worker.db.models import Document
from worker.db.session import session_scope
from worker.settings import embedded_database_url

HOSTILE_NAMES = [
    "$(touch PWNED).png", "`touch PWNED`.png", "a;touch PWNED;b.png", "a && touch PWNED.png", "a | cat.png",
    "q'uo\"te.png", "sp ace  double.png", "new\nline.png", "tab\there.png", "-rf.png", "--help.png", "-.png",
    "back\\slash.png", "*?[glob].png", "%s%n%x.png", "<img src=x onerror=alert(1)>.png", "caf\u00e9.png",
    "cafe\u0301.png", "\u202egnp.exe.png", "\u05e9\u05dc\u05d5\u05dd.png", "\U0001f600\U0001f9e1.png",
    "x" * 251 + ".png", "\u00e9" * 125 + ".png", "\U0001f600" * 62 + ".png", "no-extension", "a.b.c.d.png",
]
NOT_UTF8 = b"\xff\xfe-latin1-\xe9.png"  # Linux allows any bytes but "/" and NUL in a name
BROKEN = {b"y" * 251 + b".pdf": b"%PDF-1.4\n1 0 obj", b"$(touch PWNED) broken.pdf": b"%PDF-1.7\n",  # quarantined
          b"new\nline broken.png": b"\x89PNG\r\n\x1a\nIHDR", b"\xfe broken.dcm": bytes(128) + b"DICM\x02\x00"}


def _pngs(count: int) -> list[bytes]:
    """`count` real ECG pages as PNG, each with different bytes (so none is a duplicate of another)."""
    page = reference_page(800)
    out = []
    for i in range(count):
        copy = page.copy()
        copy[0, 0] = (i % 256, i // 256, 7)
        ok, data = cv2.imencode(".png", copy)
        assert ok
        out.append(data.tobytes())
    return out


def _settled(folder: Path) -> None:
    """Old mtimes: complete files, the watcher need not wait for them to settle."""
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (1e9, 1e9))


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _documents(home: Path) -> dict[str, Document]:
    with session_scope(embedded_database_url(home)) as session:
        rows = list(session.scalars(select(Document)))
        session.expunge_all()
    return {row.sha256: row for row in rows}


def test_hostile_file_names_are_processed_and_keep_their_names(cli: Cli, home: Path, tmp_path: Path) -> None:
    """Shell metacharacters, quotes, newlines, unicode (NFC and NFD, right-to-left override, emoji), names of
    255 bytes and bytes that are not UTF-8: each file is archived once, under `<sha12>__<name>` inside the
    archive's dated folder, with the name kept (cut to fit, extension kept, when too long), and nothing runs."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = [os.fsencode(n) for n in HOSTILE_NAMES] + [NOT_UTF8]
    assert all(len(n) <= NAME_MAX for n in names) and max(len(n) for n in names) == NAME_MAX
    payloads = dict(zip(names, _pngs(len(names)), strict=True))
    for name, data in [*payloads.items(), *BROKEN.items()]:
        Path(os.fsdecode(os.fsencode(inbox) + b"/" + name)).write_bytes(data)
    assert len(os.listdir(inbox)) == len(names) + len(BROKEN)  # every name kept apart (NFC and NFD too)
    _settled(inbox)

    result = cli("run", "--once", "--inbox", str(inbox), check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()  # no name reached a shell
    assert _files(inbox) == []

    archived = _files(home / "archive")
    assert len(archived) == len(names)
    quarantined = {_sha(p.read_bytes()): p for p in _files(home / "quarantine") if not p.name.endswith(".reason.json")}
    assert set(quarantined) == {_sha(data) for data in BROKEN.values()}
    for path in quarantined.values():  # the reason beside it, both names within the limit, both in the folder
        reason = path.with_name(path.name + ".reason.json")
        assert path.parent.parent == home / "quarantine" and len(os.fsencode(reason.name)) <= NAME_MAX
        assert json.loads(reason.read_text())["reason"] in {"corrupt", "truncated"}
    by_sha = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in archived}
    documents = _documents(home)
    for name, data in payloads.items():
        sha = _sha(data)
        path = by_sha[sha]
        assert path.parent.parent == home / "archive" and not path.is_symlink()  # inside its dated folder
        assert len(os.fsencode(path.name)) <= NAME_MAX
        kept = os.fsencode(path.name).split(b"__", 1)[1]
        assert os.fsencode(path.name).startswith(sha[:12].encode() + b"__")
        if name == NOT_UTF8:
            assert kept == b"\\xff\\xfe-latin1-\\xe9.png"  # shown escaped, valid UTF-8 for the database
        elif len(name) > 200:
            assert kept.endswith(b".png") and name.startswith(kept[:-4]) and len(kept) >= 200
            kept.decode("utf-8")  # cut between characters, never inside one
        else:
            assert kept == name
        document = documents[sha]
        assert document.status == "done" and Path(document.current_path) == path
        expected = name if name != NOT_UTF8 else b"\\xff\\xfe-latin1-\\xe9.png"
        assert os.fsencode(document.path) == os.fsencode(inbox) + b"/" + expected


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the inbox with a real ECG the links point at."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "elsewhere.png").write_bytes(_pngs(1)[0])
    return folder


def test_links_fifos_and_hidden_files_are_never_followed_moved_or_deleted(cli: Cli, home: Path, tmp_path: Path,
                                                                         outside: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "batch").mkdir(parents=True)
    regular, inside_target, hard, nested, dashed = _pngs(6)[1:]
    (inbox / "real.png").write_bytes(regular)
    (inbox / "batch" / "inside-target.png").write_bytes(inside_target)
    (inbox / "batch" / "nested.png").write_bytes(nested)
    (inbox / "-rf.png").write_bytes(dashed)
    (outside / "hard-original.png").write_bytes(hard)
    os.link(outside / "hard-original.png", inbox / "hard-link.png")
    links = {
        "to-outside.png": outside / "elsewhere.png", "passwd.png": Path("/etc/passwd"), "to-dir": outside,
        "dangling.png": tmp_path / "nowhere.png", "batch/inside-relative.png": Path("inside-target.png"),
        "inside-absolute.png": inbox / "batch" / "inside-target.png", "batch-link": inbox / "batch",
        "root-link": Path("/"),
    }
    for name, target in links.items():
        (inbox / name).symlink_to(target)
    os.mkfifo(inbox / "fifo.png")  # opening it to read would block forever
    hidden = {".hidden.png": b"hidden", "..pdf": b"dots", ".-rf.png": b"dash"}
    for name, data in hidden.items():
        (inbox / name).write_bytes(data)
    passwd = Path("/etc/passwd").read_bytes()
    outside_before = {p.name: p.read_bytes() for p in outside.iterdir()}
    _settled(inbox)

    result = cli("run", "--once", "--inbox", str(inbox), check=False, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr

    archived = {_sha(p.read_bytes()) for p in _files(home / "archive")}
    assert archived == {_sha(d) for d in (regular, inside_target, hard, nested, dashed)}
    assert not _files(home / "quarantine")
    assert not [p for p in _files(home) if p.is_symlink()]  # no link was carried into the data folder
    for name, target in links.items():  # every link where it was, pointing where it pointed
        assert (inbox / name).is_symlink() and Path(os.readlink(inbox / name)) == target, name
    assert (inbox / "fifo.png").is_fifo()
    assert {name: (inbox / name).read_bytes() for name in hidden} == hidden
    assert Path("/etc/passwd").read_bytes() == passwd
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == outside_before  # the hard link's twin too
    assert (outside / "hard-original.png").stat().st_nlink == 2  # its archived twin is the same file
    remaining = sorted(str(p.relative_to(inbox)) for p in inbox.rglob("*") if ".claimed" not in p.parts)
    assert remaining == sorted([*links, *hidden, "fifo.png", "batch"])
    assert "skipping a symbolic link" in log and "skipping a special file" in log
    for name in ("to-outside", "passwd.png", "inside-relative", "fifo.png"):  # names can carry identifiers
        assert name not in log


PATIENT = {"name": "Quintessa^Zebedee", "id": "PID-8837261", "accession": "ACC-55501923", "other": "OTH-4410098"}
NEEDLES = ["Quintessa", "Zebedee", "8837261", "55501923", "4410098"]


def _check_json_lines(stderr: str) -> None:
    """Every line a JSON object; a decoded document's intake and classification lines carry one correlation id,
    which its claim's line links to."""
    records = [json.loads(line) for line in stderr.splitlines()]  # fails on any line that is not JSON
    assert all({"time", "level", "logger", "message", "pid"} <= set(r) for r in records)
    about = {}
    for record in records:
        found = re.match(r"document ([0-9a-f]{12})\b", record["message"])
        if found:
            about.setdefault(found.group(1), []).append(record)
    decoded = [key for key, lines in about.items() if any(" decoded:" in r["message"] for r in lines)]
    assert decoded, [r["message"] for r in records][-40:]
    for key in decoded:
        lines = about[key]
        assert {r.get("document") for r in lines} == {key}, lines
        assert any(" classified:" in r["message"] for r in lines), lines  # in the classifier process
        assert len({r["pid"] for r in lines}) == 2  # intake in `run`, classification in its child
        linked = [r for r in records if r["message"].endswith(f"is document {key}")]
        assert linked and linked[0]["document"] == key
        claim = linked[0]["message"].split()[1]  # the id the watcher's claim carried
        assert any(r["logger"] == "ingest.watch" and r["document"] == claim for r in records if "document" in r)


def _dicom_with_identifiers(path: Path, seed: int) -> Path:
    """pydicom's real 12-lead waveform, with the test patient's name and ids (and a distinct instance UID)."""
    ds = pydicom.dcmread(reference_dicom())
    ds.PatientName, ds.PatientID = PATIENT["name"], PATIENT["id"]
    ds.AccessionNumber, ds.OtherPatientIDs = PATIENT["accession"], PATIENT["other"]
    ds.StudyDescription = f"ECG for {PATIENT['name']}"
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{seed}"
    ds.save_as(path)
    return path


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_patient_identifier_reaches_the_logs(cli: Cli, home: Path, tmp_path: Path, log_format: str) -> None:
    """DICOM files (decoded, duplicated and truncated) and a PDF that carry the patient's name and ids in their
    headers, metadata and file names, through a DEBUG run: the identifiers reach the database, never a log.
    In JSON, every line on stderr is a JSON object and one document's lines share its correlation id."""
    from pypdf import PdfReader, PdfWriter

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    stem = f"{PATIENT['name'].replace('^', '_')}_{PATIENT['id']}"
    _dicom_with_identifiers(inbox / f"{stem}.dcm", 1)
    shutil.copy(inbox / f"{stem}.dcm", inbox / f"{stem}_again.dcm")  # a duplicate sighting
    whole = _dicom_with_identifiers(tmp_path / "whole.dcm", 2).read_bytes()
    (inbox / f"{stem}_cut.dcm").write_bytes(whole[: len(whole) // 3])  # quarantined, the header still readable
    plain = vector_pdf(tmp_path / "plain.pdf", title=f"ECG {PATIENT['name']} {PATIENT['id']}")
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.add_metadata({"/Author": PATIENT["name"], "/Subject": PATIENT["id"], "/Keywords": PATIENT["accession"]})
    writer.write(inbox / f"{stem}.pdf")
    (inbox / f"{stem}_broken.pdf").write_bytes((inbox / f"{stem}.pdf").read_bytes()[:900])
    (inbox / f"{stem}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + PATIENT["name"].encode() * 10)
    _settled(inbox)

    cli.env.update({"ECG_INTAKE_LOG_LEVEL": "DEBUG", "COLUMNS": "400",  # wide lines: no identifier split
                    "ECG_INTAKE_LOG_FORMAT": log_format})
    result = cli("run", "--once", "--inbox", str(inbox), check=False)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "DEBUG" in log and "decoded" in log  # the run did log, at debug level
    if log_format == "json":
        _check_json_lines(result.stderr)
    leaks = {needle: [line for line in log.splitlines() if needle in line][:3] for needle in NEEDLES}
    assert not any(leaks.values()), leaks
    flat = re.sub(r"[\s\u2500-\u257f]", "", log)  # rich still folds long lines and draws boxes: join them
    assert not [needle for needle in NEEDLES if needle in flat]

    documents = _documents(home).values()  # the identifiers were read: they are where they belong
    assert {d.status for d in documents} == {"done", "quarantined"} and len(documents) == 5
    dicom = [d for d in documents if d.file_type == "dicom"]
    assert dicom and dicom[0].source_metadata["patient_id"] == PATIENT["id"]
    pdf = [d for d in documents if d.file_type == "pdf"]
    assert pdf and PATIENT["name"] in pdf[0].source_metadata.get("pdf_author", "")
    assert len(_files(home / "archive")) + len(_files(home / "quarantine")) == 6 + 3  # 3 .reason.json
