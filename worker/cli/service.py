"""Running the service: run, watch, worker, results, export, doctor, and the database schema (`db`)."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from worker.cli.common import console, observe, out, schema_ready
from worker.settings import Settings, get_settings

app = typer.Typer(no_args_is_help=True)  # run, watch, worker, results, export, doctor: merged into the top level
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)

InboxOption = Annotated[list[str] | None, typer.Option("--inbox", help="folder to watch, or SOURCE=FOLDER to name "
                                                                      "where its files come from; repeat for several")]
PollOption = Annotated[bool, typer.Option(help="poll only, no filesystem events (network shares)")]


def _inboxes(paths: list[str] | None, settings: Settings) -> list:
    from ingest.watch import Inbox
    from worker.settings import InboxSetting

    chosen = [InboxSetting.model_validate(p) for p in paths] if paths else settings.inboxes
    if not chosen:
        console.print("[red]no inbox: pass --inbox DIR or set ECG_INTAKE_INBOXES='[\"/path\"]'")
        raise typer.Exit(2)
    return [Inbox(path=c.path.expanduser().resolve(), source=c.source_name) for c in chosen]


def _watcher(paths: list[str] | None, poll: bool, settings: Settings):
    """The watcher for `run` and `watch`: each claim becomes one message on the ingest queue."""
    from ingest.watch import Watcher
    from worker import metrics
    from worker.celery_app import submit_claim

    # A claim still without an outcome after `reoffer_seconds` is offered again: its message may have been lost
    # with a broker restart. Tasks are idempotent, so a second offer of a live claim costs only time.
    return Watcher(_inboxes(paths, settings), submit_claim, settings.stable_seconds, settings.poll_interval,
                   use_events=settings.use_fs_events and not poll,
                   reoffer_after=settings.reoffer_seconds, on_new=metrics.file_received)


def _refuse_on_faults(settings: Settings, service: str) -> None:
    """The doctor's checks this service needs; any fault stops it before it claims a file."""
    from worker.doctor import SERVICE_NEEDS, faults, run_checks

    found = faults(run_checks(settings, SERVICE_NEEDS[service]))
    for check in found:
        console.print(f"[red]{check.name}: {escape(check.detail)}[/red]" + (f"\n  fix: {escape(check.fix)}"
                                                                         if check.fix else ""))
    if found:
        console.print(f"[red]not starting: {len(found)} installation fault(s); no file was touched. "
                      "`ecg-intake doctor` checks everything.")
        raise typer.Exit(2)


def _prepare(settings: Settings, service: str) -> None:
    """Refuse to start on an installation fault; folders; schema (embedded: upgraded, server: must be at head)."""
    from model_training.manifest import load_manifest
    from worker.serving import serving_bundle

    _refuse_on_faults(settings, service)
    schema_ready(settings)
    if service == "watch":
        return
    bundle_dir = serving_bundle(settings)
    manifest = load_manifest(bundle_dir)
    if not manifest.trained:
        console.print(Panel(f"Model bundle {manifest.model_version} at {bundle_dir} is UNTRAINED "
                            "(random weights).\nIts probabilities are meaningless: do not use them for care.",
                            title="WARNING: untrained model", style="bold red"))


def _set_log_level(settings: Settings, default: str) -> str:
    """ECG_INTAKE_LOG_LEVEL, else the command's default; library chatter stays at debug either way."""
    level = settings.log_level or default
    logging.getLogger().setLevel(level)
    return level


@app.command()
def run(
    inbox: InboxOption = None,
    once: Annotated[bool, typer.Option(help="process what is there now, wait for the results, exit")] = False,
    poll: PollOption = False,
) -> None:
    """Watcher plus workers on one machine: the embedded default needs no servers.

    This process watches and decodes (ingest queue); a child process classifies (infer queue).
    """
    from worker.embedded import StartupStop, run_once, serve

    startup = StartupStop()  # first: a SIGTERM while starting up must stop it cleanly, not kill it
    settings = get_settings()
    log_level = _set_log_level(settings, "WARNING" if once else "INFO")
    _prepare(settings, "run")
    observe(settings, "run", serve=not once, tasks=True)
    _quiet_root_warning(say=True)
    watcher = _watcher(inbox, poll, settings)
    if not once:
        code = serve(settings, watcher, log_level, startup)
        if startup.requested:
            console.print(f"stopped by {startup.name} during start-up; files not yet processed stay in the inbox "
                          "or claimed for the next start")
        if code:  # stopped on an error, not a signal: tell the service manager
            raise typer.Exit(code)
        return
    outcome = run_once(settings, watcher, log_level, on_claimed=lambda n: console.print(f"claimed {n} file(s)"),
                       startup=startup)
    if startup.requested:  # before the worker could hear it: it stopped warmly once ready, or never started
        console.print(f"stopped by {startup.name} during start-up; {outcome.left} file(s) stay claimed for the next "
                      "start")
        return
    if outcome.faults:
        console.print(f"[red]installation fault: {escape(outcome.faults[0])}\n{outcome.left} file(s) stay claimed, "
                      "none quarantined; fix the fault and start again to process them")
        raise typer.Exit(1)
    if outcome.failures or outcome.left:
        console.print(f"[red]{len(outcome.failures)} task(s) failed (their files are quarantined as internal_error); "
                      f"{outcome.left} file(s) stay claimed and are retried at the next start: {outcome.failures[:3]}")
        raise typer.Exit(1)
    if outcome.claimed:
        console.print(f"processed {outcome.claimed} file(s)")


@app.command()
def watch(
    inbox: InboxOption = None,
    once: Annotated[bool, typer.Option(help="claim what is there now, enqueue it, exit")] = False,
    poll: PollOption = False,
) -> None:
    """The watcher half: claims complete files and queues them for workers."""
    settings = get_settings()
    _prepare(settings, "watch")
    observe(settings, "watch", serve=not once)
    watcher = _watcher(inbox, poll, settings)
    if once:
        console.print(f"queued {len(watcher.run_once())} file(s)")
        if watcher.unqueued:
            console.print(f"[red]the queue cannot be reached: {watcher.unqueued} claimed file(s) stay in .claimed "
                          "and are queued when a watcher starts again")
            raise typer.Exit(1)
        return
    stop = threading.Event()
    try:
        watcher.run(stop)
    except KeyboardInterrupt:
        stop.set()


@app.command("worker")
def worker_command(
    queues: Annotated[str, typer.Option(help="comma-separated queues to consume")] = "ingest,infer",
    pool: Annotated[str, typer.Option(help="solo, or threads: concurrent classify tasks share micro-batches "
                                            "of one model")] = "solo",
    concurrency: int = 1,
    loglevel: str = "INFO",
    beat: Annotated[bool, typer.Option(help="also send the nightly retraining on schedule; one per installation"
                                       )] = False,
    under_run: Annotated[bool, typer.Option(hidden=True, help="started by `run`, which speaks for it")] = False,
    report_to: Annotated[Path | None, typer.Option(hidden=True, help="`run --once` reads this worker's failures "
                                                                     "and installation faults here")] = None,
) -> None:
    """The worker half: consumes the queues, decodes, classifies and stores."""
    from worker.services import WorkerSpec, celery_worker

    settings = get_settings()
    loglevel = _set_log_level(settings, loglevel)
    if under_run:
        from worker.processes import follow_parent

        _quiet_root_warning(say=False)
        follow_parent()  # `run` killed outright leaves no orphan classifier
    if report_to is not None:
        from worker.embedded import Settling

        Settling(report_to).connect()
    names = [q.strip() for q in queues.split(",") if q.strip()]
    service = "ingest" if "ingest" in names else "infer"
    _prepare(settings, service)
    observe(settings, service, serve=not under_run, tasks=True)  # `run` serves for its children
    if "infer" in names:
        from worker import serving

        serving.engine_for_worker(callers=concurrency if pool == "threads" else 1)
    worker = celery_worker(WorkerSpec(tuple(names), pool, concurrency, beat), loglevel)
    if "ingest" in names and pool == "solo":  # tasks run in this thread: its decoder process starts now
        from worker.tasks import decoder_for_worker

        decoder_for_worker().start()
    worker.start()
    if worker.exitcode:  # stopped on an error (Celery logged it), not by a signal
        raise typer.Exit(worker.exitcode)


def _serving_labels() -> tuple[str, ...]:
    from worker.serving import serving_manifest

    return tuple(serving_manifest(get_settings()).labels)


def _label(value: str | None) -> str | None:
    """A label of the serving model, in any case."""
    if value is None:
        return None
    labels = _serving_labels()
    found = [label for label in labels if label.upper() == value.upper()]
    if not found:
        raise typer.BadParameter(f"unknown label {value!r}; the serving model reads {', '.join(labels)}")
    return found[0]


def _status(value: str | None) -> str | None:
    from worker.db.queries import STATUS_FILTERS

    if value is not None and value not in STATUS_FILTERS:
        raise typer.BadParameter(f"unknown status {value!r}; one of {', '.join(STATUS_FILTERS)}")
    return value


def _sort(value: str | None) -> str | None:
    from worker.db.queries import SORTS

    if value is not None and value not in SORTS:
        raise typer.BadParameter(f"unknown sort {value!r}; one of {', '.join(SORTS)}")
    return value


def _moment(value: str | None, end_of_day: bool) -> datetime | None:
    """An ISO date or date-time in UTC (a time without a zone is UTC); a date alone is the whole day, as in
    the review UI (`day_start`, `day_end`)."""
    from worker.db.queries import day_end, day_start

    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        return day_end(day) if end_of_day else day_start(day)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO date (2026-11-28) or date-time (2026-11-28T18:00, "
                                 "UTC unless it says otherwise)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _date(value: str | None) -> str | None:
    _moment(value, False)  # refuses what it cannot read, before anything runs
    return value


LabelFilter = Annotated[str | None, typer.Option(
    "--label", callback=_label, help="pages the model found this label on (a label of the serving model); with "
    "--above/--below, by its probability instead")]
AboveFilter = Annotated[float | None, typer.Option(
    "--above", min=0.0, max=1.0, help="probability at or above P: of --label, else of any label")]
BelowFilter = Annotated[float | None, typer.Option(
    "--below", min=0.0, max=1.0, help="probability below P: of --label, else of every label")]
SinceFilter = Annotated[str | None, typer.Option(
    "--since", metavar="DATE", callback=_date, help="received at or after this ISO date or date-time (UTC)")]
UntilFilter = Annotated[str | None, typer.Option(
    "--until", metavar="DATE", callback=_date, help="received before this ISO date-time (UTC); a date alone "
    "includes that day")]
SourceFilter = Annotated[str | None, typer.Option("--source", help="the inbox's source name")]
StatusFilter = Annotated[str | None, typer.Option(
    "--status", callback=_status, help="processed, quarantined, reviewed, unreviewed or disagreement (the "
    "reviewer's labels differ from the model's)")]
PatientFilter = Annotated[str | None, typer.Option("--patient", metavar="ID", help="patient ID or accession number")]
SortOption = Annotated[str | None, typer.Option(
    "--sort", callback=_sort, help="received (default), -received, probability (of --label, else MI), "
    "uncertainty or urgency")]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, metavar="N", help="at most N rows")]


def _query(label: str | None, above: float | None, below: float | None, since: str | None, until: str | None,
           source: str | None, status: str | None, patient: str | None, sort: str | None,
           limit: int | None) -> tuple[list[dict], list[str]]:
    """The `page_results` rows the filters select (their values checked by the options' callbacks), and the
    labels to show them with: the serving model's, then any other a row was read with."""
    from worker.db.queries import ResultFilter, page_results, row_labels
    from worker.db.session import session_scope

    settings = get_settings()
    schema_ready(settings)
    serving = _serving_labels()
    filters = ResultFilter(label=label, above=above, below=below, since=_moment(since, False),
                           until=_moment(until, True), source=source, status=status, patient=patient, sort=sort,
                           labels=serving)
    with session_scope(settings.sqlalchemy_url) as session:
        rows = page_results(session, filters, limit=limit)
    return rows, row_labels(rows, serving)


@app.command()
def results(
    format: Annotated[str, typer.Option("--format", "-f", help="table, json or csv")] = "table",
    label: LabelFilter = None, above: AboveFilter = None, below: BelowFilter = None, since: SinceFilter = None,
    until: UntilFilter = None, source: SourceFilter = None, status: StatusFilter = None,
    patient: PatientFilter = None, sort: SortOption = None, limit: LimitOption = None,
) -> None:
    """One row per page: file, status, the model's probabilities and labels, the review; filtered and sorted."""
    from worker.export import RESULT_FIELDS, result_record, write_csv

    if format not in ("table", "json", "csv"):
        console.print("[red]--format must be table, json or csv")
        raise typer.Exit(2)
    rows, labels = _query(label, above, below, since, until, source, status, patient, sort, limit)
    if format == "json":
        out.print_json(json.dumps([result_record(row) for row in rows]))
    elif format == "csv":
        buffer = io.StringIO()
        write_csv(rows, buffer, labels, RESULT_FIELDS)
        sys.stdout.write(buffer.getvalue())
    else:
        labels = [label for label in labels if any(label in row["probabilities"] for row in rows)]
        table = Table(title=f"{len(rows)} page(s)")
        for column in ("document", "file", "page", "status", *labels, "labels", "review"):
            table.add_column(column, justify="right" if column in labels else "left", no_wrap=column != "file")
        for row in rows:
            state = row["status"] + (f" ({row['reason']})" if row["reason"] else "")
            review = "-" if row["review_labels"] is None else ",".join(row["review_labels"]) or "none"
            table.add_row(row["sha256"][:12], Path(row["path"]).name, str(row["page_no"] or "-"), state,
                          *[f"{row['probabilities'][lb]:.3f}" if lb in row["probabilities"] else "-" for lb in labels],
                          ",".join(row["model_labels"]) or "-", review)
        out.print(table)


def _export_format(value: str) -> str:
    if value not in ("csv", "parquet", "fhir"):
        raise typer.BadParameter(f"unknown format {value!r}; one of csv, parquet, fhir")
    return value


@app.command()
def export(
    format: Annotated[str, typer.Option(
        "--format", "-f", callback=_export_format, help="csv, parquet, or fhir (a FHIR R4 JSON Bundle: a "
        "DiagnosticReport per document, an Observation per page and finding)")],
    out_path: Annotated[Path, typer.Option("--out", "-o", dir_okay=False, help="the file to write")],
    label: LabelFilter = None, above: AboveFilter = None, below: BelowFilter = None, since: SinceFilter = None,
    until: UntilFilter = None, source: SourceFilter = None, status: StatusFilter = None,
    patient: PatientFilter = None, sort: SortOption = None, limit: LimitOption = None,
) -> None:
    """Results to a file, with the filters of `results`: csv or parquet (one row per page, a probability column
    per label, patient identifiers included), or fhir."""
    from worker.export import write_atomically, write_csv, write_fhir, write_parquet

    rows, labels = _query(label, above, below, since, until, source, status, patient, sort, limit)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if format == "csv":
        def write(part: Path) -> int:
            with open(part, "w", newline="", encoding="utf-8") as handle:
                return write_csv(rows, handle, labels)
        console.print(f"wrote {write_atomically(out_path, write)} row(s) to {out_path}")
    elif format == "parquet":
        console.print(f"wrote {write_atomically(out_path, lambda part: write_parquet(rows, part, labels))} "
                      f"row(s) "
                      f"to {out_path}")
    else:
        reports, observations = write_atomically(out_path, lambda part: write_fhir(rows, part))
        console.print(f"wrote {reports} DiagnosticReport(s) and {observations} Observation(s) to {out_path}")


@app.command()
def doctor(
    inbox: InboxOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the findings as JSON")] = False,
    only: Annotated[str | None, typer.Option(help="comma-separated check groups, e.g. database,broker,folders "
                                                  "(a cheap health check); default: all")] = None,
) -> None:
    """Check this installation: database, broker, folders, poppler, model bundle, inference engines, receiver."""
    from worker.doctor import CHECK_GROUPS, faults, run_checks
    from worker.settings import InboxSetting

    settings = get_settings()
    if inbox:
        settings = settings.model_copy(update={"inboxes": [InboxSetting.model_validate(p) for p in inbox]})
    groups = tuple(g.strip() for g in only.split(",") if g.strip()) if only else None
    unknown = [g for g in groups or () if g not in CHECK_GROUPS]
    if unknown:
        raise typer.BadParameter(f"unknown check group(s) {', '.join(unknown)}; one of {', '.join(CHECK_GROUPS)}",
                                 param_hint="--only")
    checks = run_checks(settings, groups)
    if json_out:
        out.print_json(json.dumps({"ok": not faults(checks), "checks": [c.as_dict() for c in checks]}))
    else:
        table = Table(title="ecg-intake doctor")
        for column in ("check", "status", "detail", "fix"):
            table.add_column(column, overflow="fold")
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        for check in checks:
            table.add_row(check.name, f"[{colour[check.status]}]{check.status}", escape(check.detail),
                          escape(check.fix))
        out.print(table)
    if faults(checks):
        raise typer.Exit(1)


def _quiet_root_warning(say: bool) -> None:
    """Celery's superuser warning is silenced in `run` and its child; `run` says the same in one line."""
    import warnings

    warnings.filterwarnings("ignore", message=".*superuser privileges.*")
    if say and hasattr(os, "geteuid") and os.geteuid() == 0:
        console.print("running as root: archived and quarantined files will belong to root")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Bring the schema to `revision` (default: the newest)."""
    from worker.db.migrate import current_revision, upgrade

    settings = get_settings()
    settings.ensure_dirs()
    upgrade(settings.sqlalchemy_url, revision)
    console.print(f"database at revision {current_revision(settings.sqlalchemy_url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision of the configured database."""
    from worker.db.migrate import current_revision

    out.print(current_revision(get_settings().sqlalchemy_url) or "empty")
