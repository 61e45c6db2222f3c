"""What an installation needs, checked in plain words: `ecg-intake doctor` and every service's start.

A fault here is the machine's, never a file's: a worker that starts without poppler would otherwise
meet the fault one PDF at a time. Each check is cheap and starts nothing (no engine, no worker).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from worker.settings import Settings

Status = Literal["ok", "warn", "fail"]
CHECK_GROUPS = ("database", "broker", "folders", "poppler", "bundle", "engines", "receive")
SERVICE_NEEDS = {
    "run": ("database", "broker", "folders", "poppler", "bundle"),
    "watch": ("database", "broker", "folders"),
    "ingest": ("database", "broker", "folders", "poppler", "bundle"),
    "infer": ("database", "broker", "folders", "bundle"),
    "receive": ("receive",),
    "review": ("database",),
}


@dataclass(frozen=True)
class Check:
    """One finding; `fix` is the command or setting that repairs a `fail` or `warn`."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL (a broker URL): drop any credentials
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


def check_database(settings: Settings) -> Check:
    """Reachable, and at the newest migration (an embedded SQLite file may lag: it upgrades itself)."""
    from worker.db.migrate import current_revision, head_revision, is_embedded

    url = settings.sqlalchemy_url
    shown = _redact(url)
    if is_embedded(url) and not Path(url.removeprefix("sqlite:///")).exists():
        return Check("database", "ok", f"{shown}: not created yet; made on first start")
    try:
        current = current_revision(url)
    except Exception as exc:  # any driver error: the message is what the operator needs
        return Check("database", "fail", f"cannot reach {shown}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                     "start the database server or set ECG_INTAKE_DATABASE_URL")
    head = head_revision()
    if current == head:
        return Check("database", "ok", f"{shown} at the newest migration {head}")
    if is_embedded(url):
        return Check("database", "ok", f"{shown} at {current or 'empty'}; upgraded to {head} on the next start")
    return Check("database", "fail", f"{shown} schema is at {current or 'empty'}, this code needs {head}",
                 "ecg-intake db upgrade")


def check_broker(settings: Settings) -> Check:
    if settings.embedded_broker:
        return _writable("broker", settings.broker_dir, "embedded file queue")
    from kombu import Connection

    shown = _redact(settings.celery_broker_url)
    try:
        with Connection(settings.celery_broker_url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:  # kombu raises the transport's own errors
        return Check("broker", "fail", f"cannot reach {shown}: {type(exc).__name__}: {exc}",
                     "start Redis or RabbitMQ, or set ECG_INTAKE_BROKER_URL")
    return Check("broker", "ok", f"{shown} reachable")


def _writable(name: str, folder: Path, what: str = "") -> Check:
    """A folder that exists and is writable, or can be created; which file system, and whether it is watched."""
    from ingest.watch import events_arrive

    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    prefix = f"{what} " if what else ""
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return Check(name, "fail", f"{prefix}{folder} is not writable by this user (uid {os.getuid()})",
                     f"chown or chmod {existing}, or set ECG_INTAKE_HOME")
    events, fs_type = events_arrive(existing)
    watched = "filesystem events" if events else f"polled ({fs_type})"
    state = "" if folder.exists() else ", created on first start"
    return Check(name, "ok", f"{prefix}{folder}: writable, {fs_type if events else 'network'} file system, "
                             f"{watched}{state}")


def check_folders(settings: Settings) -> list[Check]:
    folders = [("archive", settings.archive_dir), ("quarantine", settings.quarantine_dir),
               ("pages", settings.pages_dir)]
    folders += [(f"inbox {inbox.source_name}", inbox.path.expanduser().resolve()) for inbox in settings.inboxes]
    return [_writable(name, path) for name, path in folders]


def check_receive(settings: Settings) -> list[Check]:
    """`receive`'s inbox is writable; its port answers C-ECHO (receiver running) or is free; its callers."""
    return [check_receive_inbox(settings), check_receive_port(settings), check_receive_callers(settings)]


def check_receive_inbox(settings: Settings) -> Check:
    """Writable, and watched: an object written where no watcher looks would wait there for ever."""
    folder = settings.receive_inbox_dir
    found = _writable("receive inbox", folder)
    watched = {inbox.path.expanduser().resolve() for inbox in settings.inboxes}
    if found.status == "ok" and folder not in watched:
        return Check("receive inbox", "warn", f"{found.detail}; not one of the configured inboxes, so `run` and "
                                              "`watch` claim from it only when --inbox names it",
                     f"add {folder} to ECG_INTAKE_INBOXES or set ECG_INTAKE_RECEIVE_INBOX to one of them")
    return found


def _port_free(port: int) -> bool:
    """Whether this machine could listen on `port` now (what `receive` binds: every interface)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


def check_receive_port(settings: Settings) -> Check:
    """A C-ECHO to our AE title on our port: a running receiver answers; otherwise the port must be free."""
    from worker.receive import DOCTOR_AE_TITLE, echo

    port, title = settings.receive_port, settings.receive_ae_title
    answer = echo(title, port, timeout=3)
    if answer == "answered":
        return Check("receive port", "ok", f"receiver {title} answers C-ECHO on port {port}")
    if answer == "rejected":
        return Check("receive port", "ok", f"a DICOM AE on port {port} refused the doctor's association (ours "
                                           f"with an allow-list that does not name {DOCTOR_AE_TITLE}, or another AE)",
                     f"add {DOCTOR_AE_TITLE} to ECG_INTAKE_RECEIVE_ALLOWED_CALLERS to have it answer C-ECHO")
    if _port_free(port):
        return Check("receive port", "ok", f"receiver not running, port {port} free")
    return Check("receive port", "fail", f"port {port} in use by something that does not answer C-ECHO as {title}",
                 "stop that program or set ECG_INTAKE_RECEIVE_PORT to a free port")


def check_receive_callers(settings: Settings) -> Check:
    callers = settings.receive_allowed_callers
    if not callers:
        return Check("receive callers", "warn", "no allow-list: `receive` accepts any calling AE title",
                     'set ECG_INTAKE_RECEIVE_ALLOWED_CALLERS=\'["CART1", "MUSE"]\'')
    return Check("receive callers", "ok", f"{len(callers)} calling AE title(s) allowed: {', '.join(callers)}")


def check_poppler() -> Check:
    missing = [tool for tool in ("pdfinfo", "pdftoppm") if shutil.which(tool) is None]
    if missing:
        return Check("poppler", "fail", f"{' and '.join(missing)} not on PATH: PDFs cannot be read",
                     "apt-get install poppler-utils")
    version = subprocess.run(["pdftoppm", "-v"], capture_output=True, text=True, timeout=10)
    first = (version.stderr or version.stdout).strip().splitlines()
    return Check("poppler", "ok", first[0] if first else "pdftoppm present")


def check_bundle(settings: Settings) -> Check:
    from model_training.manifest import BundleError, check_compatible, load_manifest
    from worker.serving import serving_bundle

    where = serving_bundle(settings)
    try:
        manifest = load_manifest(where)
        check_compatible(manifest)
    except BundleError as exc:
        return Check("model", "fail", str(exc), "set ECG_INTAKE_BUNDLE to a bundle directory")
    if not (where / manifest.weights).is_file():
        return Check("model", "fail", f"{where} has no weights file {manifest.weights}",
                     "copy the whole bundle directory")
    detail = f"{manifest.model_version} at {where}, input {manifest.input_size[0]}x{manifest.input_size[1]}"
    if not manifest.trained:
        return Check("model", "warn", f"{detail} is UNTRAINED (random weights): its answers mean nothing",
                     "set ECG_INTAKE_BUNDLE to a trained bundle")
    return Check("model", "ok", f"{detail}, trained")


def check_engines(settings: Settings) -> Check:
    from model_training.manifest import BundleError
    from worker.engine import AUTO_ORDER, engine_report, unavailable

    try:
        from worker.serving import serving_bundle

        reasons = engine_report(serving_bundle(settings), settings.engine_cache_dir)
    except BundleError:  # reported by the model check; say what the machine itself can run
        reasons = {kind: unavailable(kind) for kind in AUTO_ORDER}
    usable = [kind for kind, reason in reasons.items() if reason is None]
    skipped = "; ".join(f"{kind}: {reason}" for kind, reason in reasons.items() if reason)
    if settings.engine != "auto" and reasons[settings.engine]:
        return Check("engines", "fail", f"ECG_INTAKE_ENGINE={settings.engine} cannot run: {reasons[settings.engine]}",
                     "set ECG_INTAKE_ENGINE=auto")
    return Check("engines", "ok", f"usable: {', '.join(usable)}" + (f" (not here: {skipped})" if skipped else ""))


def run_checks(settings: Settings, only: tuple[str, ...] | None = None) -> list[Check]:
    """Every check, or `only` the named groups (database, broker, folders, poppler, bundle, engines, receive)."""
    groups = only or CHECK_GROUPS
    checks: list[Check] = []
    for group in groups:
        if group == "database":
            checks.append(check_database(settings))
        elif group == "broker":
            checks.append(check_broker(settings))
        elif group == "folders":
            checks.extend(check_folders(settings))
        elif group == "poppler":
            checks.append(check_poppler())
        elif group == "bundle":
            checks.append(check_bundle(settings))
        elif group == "engines":
            checks.append(check_engines(settings))
        elif group == "receive":
            checks.extend(check_receive(settings))
        else:
            raise ValueError(f"unknown check group {group!r}")
    return checks


def faults(checks: list[Check]) -> list[Check]:
    return [check for check in checks if check.status == "fail"]
