"""The JSON log form (`worker.logs`) and the correlation id (`ingest.correlation`), through real logging calls."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console
from rich.panel import Panel

from ingest.correlation import current_document, follow_document, working_on
from tests.helpers.cli import Cli
from worker.logs import JsonFormatter, _ConsoleLines, uvicorn_log_config

SHA = "ab12cd34ef56" + "0" * 52


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What loggers under `test_logs` write, as the JSON handler of `log_format=json` writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    correlation = logging.getLogger("ingest.correlation")
    correlation.addHandler(handler)
    correlation.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    correlation.removeHandler(handler)


def _records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_line_with_its_fields(lines: io.StringIO) -> None:
    before = datetime.now(UTC)
    logging.getLogger("test_logs.part").warning("document %s: %d page(s)\nsecond line", "x", 3)
    (record,) = _records(lines)
    assert record["level"] == "WARNING" and record["logger"] == "test_logs.part"
    assert record["message"] == "document x: 3 page(s)\nsecond line"  # formatted, and still one line of output
    assert record["pid"] > 0 and "document" not in record and "exception" not in record
    assert record["time"].endswith("Z")
    stamp = datetime.fromisoformat(record["time"])
    assert stamp.utcoffset().total_seconds() == 0 and abs((stamp - before).total_seconds()) < 5


def test_exception_text_is_kept(lines: io.StringIO) -> None:
    try:
        raise ValueError("bad bytes")
    except ValueError:
        logging.getLogger("test_logs").exception("decoder failed")
    (record,) = _records(lines)
    assert record["message"] == "decoder failed"
    assert "Traceback" in record["exception"] and "ValueError: bad bytes" in record["exception"]


def test_the_correlation_id_follows_a_claim_to_its_document(lines: io.StringIO) -> None:
    log = logging.getLogger("test_logs")
    log.info("before")
    with working_on("18a2b3c4d5e6-4242"):
        log.info("claimed")
        assert follow_document(SHA) == SHA[:12]
        log.info("decoded")
    log.info("after")
    assert current_document() is None
    records = _records(lines)
    assert [r["message"] for r in records] == ["before", "claimed", "claim 18a2b3c4d5e6-4242 is document ab12cd34ef56",
                                               "decoded", "after"]
    assert [r.get("document") for r in records] == [None, "18a2b3c4d5e6-4242", "ab12cd34ef56", "ab12cd34ef56", None]


def test_no_id_outlives_work_outside_a_block() -> None:
    follow_document(SHA)  # intake called directly (tests, benchmarks): no task opened a block
    assert current_document() is None


def test_each_console_print_becomes_one_record_without_colour(lines: io.StringIO) -> None:
    console = Console(force_terminal=True, color_system="truecolor", width=60)
    console.file = _ConsoleLines(logging.getLogger("test_logs.console"))
    console.print("[red]claimed 3 file(s)[/red]")
    console.print(Panel("Model bundle x is UNTRAINED " + "y" * 80, title="WARNING: untrained model"))
    records = _records(lines)
    assert [r["logger"] for r in records] == ["test_logs.console"] * 2
    assert records[0]["message"] == "claimed 3 file(s)"
    panel = records[1]["message"].splitlines()
    assert len(panel) == 5 and "WARNING: untrained model" in panel[0] and "\x1b" not in records[1]["message"]
    assert "y" * 80 in "".join(line.strip("│ ") for line in panel)  # folded inside the box, nothing cut off


def test_uvicorn_keeps_its_handlers_only_in_text() -> None:
    assert uvicorn_log_config("json") is None
    assert "uvicorn.access" in uvicorn_log_config("text")["loggers"]


def test_review_logs_json_and_never_a_query_string(bundle_dir: Path, tmp_path: Path) -> None:
    """`ecg-intake review` under json: uvicorn's own lines (a malformed request is a warning) and the console's
    come out as JSON lines, and a worklist URL with a patient id in its query string is logged nowhere."""
    from tests.helpers.review import IDENTIFIER, Http, serve_review

    with serve_review(tmp_path, bundle_dir, {"ECG_INTAKE_LOG_FORMAT": "json"}) as site:
        port = int(site.url.rsplit(":", 1)[1])
        reviewer = Http(site.url)
        assert reviewer.login("rita").status == 303
        for path in ("/worklist", "/api/results"):
            assert reviewer.get(path, params={"patient": f"{IDENTIFIER}123"}).status == 200
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            raw.recv(1024)
    records = [json.loads(line) for line in (tmp_path / "review.log").read_text().splitlines()]
    assert any(r["logger"] == "ecg_intake.console" and "review UI on" in r["message"] for r in records), records
    assert any(r["logger"].startswith("uvicorn") and r["level"] == "WARNING" for r in records), records
    assert not [r for r in records if IDENTIFIER in json.dumps(r)]


def test_receive_logs_json_keyed_by_the_document_it_stores(cli: Cli, tmp_path: Path) -> None:
    """`ecg-intake receive` under json: every line JSON, and the stored object's line carries the key intake will
    give the file (its sha256 prefix), so a received object is followed from the network to its classification."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid
    from pynetdicom import AE

    from tests.helpers.servers import free_port, port_open

    inbox, port, log = tmp_path / "inbox", free_port(), tmp_path / "receive.log"
    cli.env.update({"ECG_INTAKE_LOG_FORMAT": "json", "ECG_INTAKE_INBOXES": json.dumps([str(inbox)])})
    server = cli.popen("receive", "--port", str(port), log=log)
    try:
        deadline = time.monotonic() + 60
        while not port_open(port) and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        ecg = dcmread(get_testdata_file("waveform_ecg.dcm", download=False))
        ecg.SOPInstanceUID = ecg.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        sender = AE(ae_title="CART1")
        sender.add_requested_context(ecg.SOPClassUID, ecg.file_meta.TransferSyntaxUID)
        assoc = sender.associate("127.0.0.1", port, ae_title="ECGINTAKE")
        assert assoc.is_established, log.read_text()
        assert int(assoc.send_c_store(ecg).Status) == 0
        assoc.release()
    finally:
        server.terminate()
        server.wait(timeout=30)
    (stored,) = inbox.glob("*.dcm")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    (line,) = [r for r in records if r["message"].startswith("receive: stored")]
    assert line["document"] == hashlib.sha256(stored.read_bytes()).hexdigest()[:12]
    assert any(r["logger"] == "ecg_intake.console" and "receiver stopped" in r["message"] for r in records)
