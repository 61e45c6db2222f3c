"""SIGTERM while `ecg-intake run` starts up stops it cleanly and says so; it used to end on the spot (exit 143).

A service manager may stop `run` at any moment, also while it upgrades the database or starts its classifier
child: the exit must be 0, the message must name the signal, and a file already in the inbox is not lost.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.cli import Cli
from tests.helpers.inputs import reference_page
from worker.settings import embedded_database_path

STARTUP_SIGN_WITHIN_S = 120  # imports and the first database access, on a loaded 2-core machine
STOP_WITHIN_S = 60


def _copies(name: str, *folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob(name) if p.is_file()]


@pytest.mark.timeout(STARTUP_SIGN_WITHIN_S + STOP_WITHIN_S + 60)
def test_sigterm_during_startup_stops_cleanly(cli: Cli, home: Path, tmp_path: Path) -> None:
    import cv2

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cv2.imwrite(str(inbox / "scan.png"), reference_page(800))
    log = tmp_path / "run.log"
    process = cli.popen("run", "--inbox", str(inbox), log=log)
    try:
        # The database file appears while `run` prepares the installation: well inside start-up, long before the
        # worker is ready, and after the process could note a signal.
        deadline = time.monotonic() + STARTUP_SIGN_WITHIN_S
        while not embedded_database_path(home).exists():
            assert process.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, f"no database after {STARTUP_SIGN_WITHIN_S}s:\n{log.read_text()}"
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running {STOP_WITHIN_S}s after SIGTERM:\n{log.read_text()[-4000:]}")
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()
    assert code == 0, f"exit code {code} (-15: killed by the signal):\n{output[-4000:]}"
    assert "stopped by SIGTERM during start-up" in " ".join(output.split()), output[-4000:]
    found = _copies("*scan.png", inbox, home / "archive", home / "quarantine")
    assert len(found) == 1, f"the dropped file should be in exactly one place: {found}"
    assert not _copies("*scan.png", home / "quarantine"), "a good file was quarantined"
