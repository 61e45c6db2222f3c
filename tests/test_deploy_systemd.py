"""deploy/systemd/ checked by systemd itself (`systemd-analyze verify`), and the invariants a bare-metal server
relies on: one unit per process, every one restarted, stopped warmly, after the schema migration, under the
one target."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "deploy" / "systemd"
INSTALLED = "/opt/ecg-intake/.venv/bin/ecg-intake"
SERVICES = sorted(UNITS.glob("*.service"))


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def _verify_here(tmp_path: Path) -> list[str]:
    """The units copied with ExecStart pointing at this venv's `ecg-intake` (verify checks it is executable);
    templates are verified as instance 1."""
    names = []
    for path in UNITS.iterdir():
        (tmp_path / path.name).write_text(path.read_text().replace(INSTALLED, str(Path(sys.executable).parent
                                                                                   / "ecg-intake")))
        names.append(str(tmp_path / path.name.replace("@.", "@1.")))
    return names


def test_systemd_accepts_every_unit(tmp_path: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *_verify_here(tmp_path)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr  # unknown keys are only warnings


def test_one_unit_per_process() -> None:
    commands = {path.name: _unit(path)["Service"]["ExecStart"].removeprefix(INSTALLED + " ") for path in SERVICES}
    assert commands == {
        "ecg-intake-migrate.service": "db upgrade",
        "ecg-intake-watch.service": "watch",
        "ecg-intake-ingest@.service": "worker --queues ingest",
        "ecg-intake-infer.service": "worker --queues infer --pool threads --concurrency 8",
        "ecg-intake-train.service": "worker --queues train --beat",
        "ecg-intake-review.service": "review --host 127.0.0.1 --port 8080",
        "ecg-intake-receive.service": "receive",
    }


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_each_service_restarts_stops_warmly_and_waits_for_the_schema(path: Path) -> None:
    unit = _unit(path)
    service = unit["Service"]
    assert service["User"] == "ecg-intake" and service["EnvironmentFile"] == "/etc/ecg-intake/env"
    assert unit["Install"]["WantedBy"] == "ecg-intake.target"
    assert "ecg-intake.target" in unit["Unit"]["PartOf"]
    if path.name == "ecg-intake-migrate.service":
        assert service["Type"] == "oneshot" and service["RemainAfterExit"] == "yes"
        return
    assert service["Restart"] in {"always", "on-failure"} and float(service["RestartSec"]) > 0
    assert "ecg-intake-migrate.service" in unit["Unit"]["After"].split()
    assert "ecg-intake-migrate.service" in unit["Unit"]["Requires"].split()
    assert service.get("KillSignal", "SIGTERM") == "SIGTERM" and int(service["TimeoutStopSec"]) >= 60


def test_the_target_starts_them_all() -> None:
    target = _unit(UNITS / "ecg-intake.target")
    assert target["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in target["Unit"]["After"]
