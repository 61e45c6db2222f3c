"""`ecg-intake receive`: the DICOM C-STORE receiver (worker/receive.py); this module parses and prints only."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape

from worker.cli.common import console, observe
from worker.settings import Settings, get_settings

app = typer.Typer(no_args_is_help=True)  # receive: merged into the top level


def _refuse_on_faults(settings: Settings) -> None:
    """The doctor's receive checks (inbox writable, port free or ours): a fault stops it before it listens, a
    warning (no allow-list, an inbox no watcher is told of) is said once."""
    from worker.doctor import SERVICE_NEEDS, faults, run_checks

    checks = run_checks(settings, SERVICE_NEEDS["receive"])
    for check in checks:
        if check.status == "warn":
            console.print(f"[yellow]{check.name}: {escape(check.detail)}[/yellow]")
    found = faults(checks)
    for check in found:
        console.print(f"[red]{check.name}: {escape(check.detail)}[/red]" + (f"\n  fix: {escape(check.fix)}"
                                                                         if check.fix else ""))
    if found:
        console.print("[red]not receiving: `ecg-intake doctor` checks everything.")
        raise typer.Exit(2)


@app.command()
def receive(
    ae_title: Annotated[str | None, typer.Option("--ae-title", help="our AE title (default "
                                                 "ECG_INTAKE_RECEIVE_AE_TITLE, ECGINTAKE)")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="TCP port (default "
                                             "ECG_INTAKE_RECEIVE_PORT, 11112)")] = None,
    inbox: Annotated[Path | None, typer.Option("--inbox", file_okay=False, help="folder objects are written into "
                                               "(default ECG_INTAKE_RECEIVE_INBOX, else the first inbox, else "
                                               "<home>/inbox)")] = None,
) -> None:
    """Receive DICOM objects over the network (C-STORE SCP) into an inbox the watcher picks up.

    ECG waveforms, secondary captures and encapsulated PDFs are accepted; C-ECHO answers. SIGTERM or
    Ctrl-C stops it: stores being written finish, objects still arriving stay with their senders.
    """
    from worker.receive import ACCEPTED_SOP_CLASSES, start, stop

    settings = get_settings()
    updates = {key: value for key, value in (("receive_ae_title", ae_title), ("receive_port", port),
                                             ("receive_inbox", inbox)) if value is not None}
    try:
        settings = settings.model_validate({**settings.model_dump(), **updates})  # validated as the env would be
    except ValidationError as exc:
        console.print(f"[red]{escape(str(exc))}")
        raise typer.Exit(2) from exc
    logging.getLogger().setLevel(settings.log_level or "INFO")
    _refuse_on_faults(settings)
    observe(settings, "receive")
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        server, receiver = start(settings)
    except OSError as exc:
        console.print(f"[red]cannot listen on port {settings.receive_port}: {escape(str(exc))}")
        raise typer.Exit(2) from exc
    callers = ", ".join(settings.receive_allowed_callers) or "any calling AE title (no allow-list)"
    console.print(f"receiving as AE {settings.receive_ae_title} on port {server.server_address[1]} into "
                  f"{escape(str(receiver.inbox))}; {len(ACCEPTED_SOP_CLASSES)} SOP classes; callers: "
                  f"{escape(callers)}")
    while not stopping.wait(1):
        pass
    aborted = stop(server, receiver, grace_s=settings.receive_timeout)
    console.print("receiver stopped" + (f"; {aborted} association(s) aborted, their senders keep what they had "
                                         "not been answered for" if aborted else ""))
