"""The model registry (`model`: show, list, promote, rollback), the nightly retraining (`retrain`), cleaning one
file as intake would (`preprocess`), reading its pages back as signals (`digitise`), and the installation the
training commands of `model_training.cli` run in: its configured bundle and its database of reviewed pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from model_training.cli import Installation
from worker.cli.common import cli_actor, console, out, ready_settings
from worker.settings import get_settings

model_app = typer.Typer(help="Model bundles.", no_args_is_help=True)
app = typer.Typer(no_args_is_help=True)  # retrain, preprocess, digitise: merged into the top level


def installation() -> Installation:
    """This installation as the training commands see it: read when a command needs it, not at start."""
    return Installation(bundle_dir=_serving_bundle, export_reviewed=_export_reviewed)


def _serving_bundle() -> Path:
    from worker.serving import serving_bundle

    return serving_bundle(get_settings())


def _export_reviewed(folder: Path) -> int:
    """Reviewed pages labelled for the serving model (its labels; pages prepared for its geometry)."""
    from worker.db.session import session_scope
    from worker.serving import serving_manifest
    from worker.training_set import export_reviewed

    settings = get_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        return export_reviewed(session, folder, serving_manifest(settings))


@model_app.command("show")
def model_show(key: Annotated[str | None, typer.Argument(help="a bundle directory, or a registered version: "
                                                              "id, name@version or a version prefix")] = None,
               ) -> None:
    """A registered version's record (default: the champion) with its metrics and decision, or a bundle's
    manifest when KEY is a directory."""
    from model_training.manifest import load_manifest
    from worker.db.queries import champion, model_version_like
    from worker.db.session import session_scope

    if key is not None and Path(key).is_dir():
        out.print_json(load_manifest(Path(key)).model_dump_json())
        return
    settings = ready_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        row = model_version_like(session, key) if key else champion(session)
        if row is None:
            console.print(f"[red]no model version {key!r}" if key else "[red]no champion registered yet; it is "
                          "registered when a worker first starts, or with `ecg-intake model promote DIR`")
            raise typer.Exit(2)
        out.print_json(json.dumps(_version_record(row) | {"metrics": row.metrics, "manifest": row.manifest},
                                  default=str))


def _version_record(row: Any) -> dict[str, Any]:
    retrain = row.metrics.get("retrain", {}) if isinstance(row.metrics, dict) else {}
    return {"id": row.id, "name": row.name, "status": row.status, "bundle": row.bundle_path,
            "created": row.created_at.isoformat(timespec="seconds") if row.created_at else None,
            "promoted": row.promoted_at.isoformat(timespec="seconds") if row.promoted_at else None,
            "holdout_gain": retrain.get("comparison", {}).get("macro_auroc_diff"),
            "reasons": retrain.get("decision", {}).get("reasons")}


@model_app.command("list")
def model_list(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Every registered version, newest first: status, when promoted, the nightly decision."""
    from worker.db.queries import model_versions
    from worker.db.session import session_scope

    settings = ready_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        records = [_version_record(row) for row in model_versions(session)]
    if as_json:
        out.print_json(json.dumps(records))
        return
    table = Table(title="model versions")
    for column in ("id", "name", "status", "created", "promoted", "holdout gain", "why not promoted"):
        table.add_column(column)
    for r in records:
        gain = f"{r['holdout_gain']:+.4f}" if isinstance(r["holdout_gain"], float) else ""
        table.add_row(str(r["id"]), r["name"], r["status"], r["created"] or "", r["promoted"] or "", gain,
                      "; ".join(r["reasons"] or []))
    out.print(table)


@model_app.command("promote")
def model_promote(key: Annotated[str, typer.Argument(help="a bundle directory, or a registered version")]) -> None:
    """Make a version champion by hand (a bundle directory is registered first); workers switch to it within
    `ECG_INTAKE_CHAMPION_CHECK_SECONDS`."""
    from model_training.manifest import BundleError, load_manifest
    from worker.db.queries import model_version_like
    from worker.db.session import session_scope
    from worker.registry import RegistryError, champion_bundle, promote, register

    settings = ready_settings()
    champion_bundle(settings.sqlalchemy_url, settings.bundle_dir)  # so the one being replaced is on record
    with session_scope(settings.sqlalchemy_url) as session:
        if Path(key).is_dir():
            try:
                row = register(session, load_manifest(Path(key)), Path(key))
            except BundleError as exc:
                console.print(f"[red]{exc}")
                raise typer.Exit(2) from exc
        else:
            row = model_version_like(session, key)
            if row is None:
                console.print(f"[red]no model version {key!r}; `ecg-intake model list` shows them")
                raise typer.Exit(2)
        try:
            old = promote(session, row, cli_actor(), "promoted by hand")
        except RegistryError as exc:
            console.print(f"[red]{exc}")
            raise typer.Exit(2) from exc
        console.print(f"{row.name} is champion" + (f"; {old.name} retired" if old else ""))


@model_app.command("rollback")
def model_rollback() -> None:
    """Put the previous champion back; the current one is marked rejected."""
    from worker.db.session import session_scope
    from worker.registry import RegistryError, rollback

    settings = ready_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        try:
            gone, restored = rollback(session, cli_actor())
        except RegistryError as exc:
            console.print(f"[red]{exc}")
            raise typer.Exit(2) from exc
        console.print(f"{restored.name} is champion again; {gone.name} rejected")


@app.command()
def retrain(
    now: Annotated[bool, typer.Option("--now", help="run here and wait, instead of queueing it for a train "
                                                     "worker")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Fine-tune the champion on reviewed pages and promote the result only if it is measurably better.

    Runs every night on its own (`ECG_INTAKE_RETRAIN_SCHEDULE`); exit 3 when another run holds the lock.
    """

    settings = ready_settings()
    if not now:
        from worker.celery_app import submit_retrain

        submit_retrain(cli_actor())
        console.print("queued on the train queue; a worker with `--queues train` runs it")
        return
    from worker.locks import LockHeld
    from worker.retrain import run_retrain

    try:
        report = run_retrain(settings, cli_actor())
    except LockHeld as exc:
        console.print(f"[red]refused: {exc}")
        raise typer.Exit(3) from exc
    if as_json:
        out.print_json(json.dumps(report))
        return
    if report["status"] == "skipped":
        console.print(f"skipped: {report['reason']}")
        return
    out.print(_report_table(report))
    console.print(f"{report['status']}: " + ("; ".join(report["decision"]["reasons"]) or "every check met"))


def _report_table(report: dict[str, Any]) -> Table:
    """The nightly decision as a person reads it: both models per class on the holdout, and the benchmark."""
    comparison, holdout = report["comparison"], report["holdout"]
    table = Table(title=f"{report['challenger']} against {report['champion']} on {report['counts']['holdout']} "
                        "held-out reviewed pages")
    for column in ("", "champion", "challenger", "difference", "95% CI"):
        table.add_column(column, justify="left" if not column else "right")
    rows = [(label, holdout["champion"]["per_class_auroc"][label], holdout["challenger"]["per_class_auroc"][label],
             diff, comparison["per_class_auroc_diff_ci"][label])
            for label, diff in comparison["per_class_auroc_diff"].items()]
    rows.append(("macro", holdout["champion"]["macro_auroc"], holdout["challenger"]["macro_auroc"],
                 comparison["macro_auroc_diff"], comparison["macro_auroc_diff_ci"]))
    for label, before, after, diff, (low, high) in rows:
        table.add_row(label, _number(before, ".4f"), _number(after, ".4f"), _number(diff, "+.4f"),
                      f"{_number(low, '+.3f')} to {_number(high, '+.3f')}")
    if report.get("challenger_synthetic") is not None:
        table.add_row("synthetic", _number(report["champion_synthetic"], ".4f"),
                      _number(report["challenger_synthetic"], ".4f"), "", f"floor {report['rule']['synthetic_floor']}")
    return table


def _number(value: float | None, spec: str) -> str:
    """A figure of the report; undefined ones (a class with one value in the holdout) are null in it."""
    return "n/a" if value is None else format(value, spec)


@app.command("preprocess")
def preprocess_command(
    file: Annotated[Path, typer.Argument(help="any input the worker reads: PDF, DICOM, image")],
    steps: Annotated[Path | None, typer.Option("--steps", help="write every intermediate stage as PNG here")] = None,
    use: Annotated[str | None, typer.Option(help="comma-separated steps (default: the bundle's)")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="write page 1's model input here")] = None,
    sheet: Annotated[Path | None, typer.Option(help="write page 1's stages side by side as one PNG")] = None,
) -> None:
    """Clean one file's pages as intake would, and show what each step did."""
    import cv2

    from ingest.decode import decode
    from ingest.preprocess import clean
    from model_training.contact_sheet import contact_sheet
    from worker.serving import serving_manifest

    settings = get_settings()
    manifest = serving_manifest(settings)
    chosen = tuple(s.strip() for s in use.split(",") if s.strip()) if use else manifest.preprocess_steps
    _, pages = decode(file, settings.decode_limits())
    if steps:
        steps.mkdir(parents=True, exist_ok=True)
    for page in pages:
        result = clean(page.image, tuple(manifest.input_size), chosen, keep_stages=bool(steps or sheet))
        if sheet and page.page_no == 1:
            cv2.imwrite(str(sheet), contact_sheet(result.stages, columns=4, width=480))
        for number, (name, image) in enumerate(result.stages if steps else []):
            path = steps / f"page{page.page_no:02d}-{number:02d}-{name}.png"
            cv2.imwrite(str(path), image)
            out.print(str(path))
        if out_file and page.page_no == 1:
            cv2.imwrite(str(out_file), result.image)
        console.print(f"page {page.page_no}: steps {','.join(chosen)}; sheet found: {result.page_found}; "
                      f"deskewed by {result.skew_deg:+.2f} degrees; trace area found: {result.trace_area_found}; "
                      + (f"{result.px_per_mm * result.work_factor:.2f} px/mm from the "
                         f"{result.scale_source.replace('_', ' ')}" if result.px_per_mm else "scale unknown"))


DIGITISE_FORMATS = ("wfdb", "csv", "dicom")


@app.command("digitise")
def digitise_command(
    file: Annotated[Path, typer.Argument(help="any input the worker reads: PDF, DICOM, vendor XML, image")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="folder for the signals (default: beside FILE)")] = None,
    format: Annotated[str, typer.Option("--format", help="wfdb, csv or dicom")] = "wfdb",
) -> None:
    """Each page's 12 leads as signals (mV, 500 Hz): a waveform file's own recording, or a drawn page read back.

    A lead the page did not show, or that could not be read, is left empty (NaN), never drawn flat; the table
    says which leads were read and how much of each."""
    from scipy.signal import resample_poly

    from ingest.decode import decode
    from ingest.reasons import IngestError
    from ingest.render import PAGE_SECONDS, STANDARD_LEADS
    from model_training.digitise.classical import FS, Digitised
    from model_training.digitise.page import digitise_image
    from model_training.digitise.write import write_csv, write_dicom, write_wfdb

    if format not in DIGITISE_FORMATS:
        raise typer.BadParameter(f"unknown format {format!r}; one of {', '.join(DIGITISE_FORMATS)}")
    try:
        _, pages = decode(file, get_settings().decode_limits())
    except IngestError as exc:
        console.print(f"[red]{file.name}: {exc}")
        raise typer.Exit(1) from exc
    folder = out_dir or file.parent
    folder.mkdir(parents=True, exist_ok=True)
    table = Table(title=f"ecg-intake digitise {file.name}")
    for column in ("page", "from", "layout", "leads read", "unread or partly read", "written"):
        table.add_column(column, overflow="fold")
    unreadable = 0
    for page in pages:
        name = f"{file.stem}-p{page.page_no}"
        if page.signals is not None:
            fs = round(float(page.metadata["sampling_frequency"]))
            signals = page.signals if fs == FS else resample_poly(page.signals, FS, fs, axis=1)
            digitised = Digitised(signals[:, : round(PAGE_SECONDS * FS)], STANDARD_LEADS,
                                  dict.fromkeys(STANDARD_LEADS, 1.0), FS)
            source, layout = "recording", "-"
        else:
            reading = digitise_image(page.image)
            if reading.layout.name is None:
                unreadable += 1
                table.add_row(str(page.page_no), "page", "none found", "0", "all", "nothing")
                continue
            digitised, source, layout = reading.digitised, f"page, {reading.method}", reading.layout.name
        partly = [f"{lead} {share:.0%}" for lead, share in digitised.read.items() if share < 0.95]
        comments = [f"ecg-intake digitise: {source}", f"layout: {layout}"]
        if format == "wfdb":
            written = write_wfdb(folder, name, digitised, comments)
        elif format == "csv":
            written = write_csv(folder / f"{name}.csv", digitised)
        else:
            written = write_dicom(folder / f"{name}.dcm", digitised, page.metadata,
                                  f"ECG digitised by ecg-intake ({source}, {layout})")
        read = sum(share >= 0.5 for share in digitised.read.values())
        table.add_row(str(page.page_no), source, layout, f"{read} of 12", ", ".join(partly) or "-", str(written))
    out.print(table)
    if unreadable:
        console.print(f"[red]{unreadable} page(s) with no standard layout found (3x4, 6x2, 12x1, 2x6): not written")
        raise typer.Exit(1)
