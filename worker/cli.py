"""The `ecg-intake` command: run, watch, worker, results, db, model, samples."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from worker.processes import Supervised
from worker.settings import Settings, get_settings

app = typer.Typer(help="Classify scanned ECGs dropped into watched folders.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
model_app = typer.Typer(help="Model bundles.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks; each prints a table and can write JSON.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(model_app, name="model")
app.add_typer(bench_app, name="bench")

console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 150)  # piped output: wide enough for the table
log = logging.getLogger("ecg_intake")

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
    from worker import tasks

    return Watcher(_inboxes(paths, settings), tasks.submit_claim, settings.stable_seconds, settings.poll_interval,
                   use_events=settings.use_fs_events and not poll)


def _prepare(settings: Settings, need_model: bool = True) -> None:
    """Data folders, schema at head, and a usable bundle (with a loud warning if it is untrained)."""
    from model_training.bundle import BundleError, check_compatible, load_manifest
    from worker.db.migrate import upgrade

    settings.ensure_dirs()
    upgrade(settings.sqlalchemy_url)
    if not need_model:
        return
    try:
        manifest = load_manifest(settings.bundle_dir)
        check_compatible(manifest)
    except BundleError as exc:
        console.print(f"[red]model bundle problem: {exc}\n"
                      "Set ECG_INTAKE_BUNDLE to a bundle directory, or make a placeholder with "
                      "`ecg-intake model init-untrained DIR`.")
        raise typer.Exit(2) from exc
    if not manifest.trained:
        console.print(Panel(f"Model bundle {manifest.model_version} at {settings.bundle_dir} is UNTRAINED "
                            "(random weights).\nIts probabilities are meaningless: do not use them for care.",
                            title="WARNING: untrained model", style="bold red"))


def _celery_worker(queues: list[str], pool: str = "solo", concurrency: int = 1, loglevel: str = "INFO"):
    from worker.celery_app import app as celery

    return celery.Worker(hostname=f"ecg-intake-{os.getpid()}@{socket.gethostname()}", pool_cls=pool,
                         concurrency=concurrency, queues=queues, loglevel=loglevel, quiet=True)


def _inference_process(settings: Settings) -> Supervised:
    """`run`'s second process: classify tasks in threads, so their pages share micro-batches and decoding
    in the first process overlaps inference here."""
    command = [sys.executable, "-m", "worker.cli", "worker", "--queues", "infer", "--pool", "threads",
               "--concurrency", str(settings.batch_size)]
    return Supervised(command, {**os.environ, "ECG_INTAKE_HOME": str(settings.home_dir)}, "inference")


@app.command()
def run(
    inbox: InboxOption = None,
    once: Annotated[bool, typer.Option(help="process what is there now, wait for the results, exit")] = False,
    poll: PollOption = False,
) -> None:
    """Watcher plus workers on one machine: the embedded default needs no servers.

    This process watches and decodes (ingest queue); a child process classifies (infer queue).
    """
    from celery.signals import task_failure

    settings = get_settings()
    _prepare(settings)
    watcher = _watcher(inbox, poll, settings)
    inference = _inference_process(settings)
    worker = _celery_worker(["ingest"])
    if not once:
        stop = threading.Event()
        threading.Thread(target=watcher.run, args=(stop,), name="watcher", daemon=True).start()
        try:
            worker.start()
        finally:
            stop.set()
            inference.stop()
        return

    started = time.time()
    claims = watcher.run_once()
    console.print(f"claimed {len(claims)} file(s)")
    if not claims:
        inference.stop()
        return
    failures: list[str] = []
    task_failure.connect(lambda sender=None, exception=None, **_: failures.append(f"{sender.name}: {exception}"),
                         weak=False)

    def stop_when_settled() -> None:
        failed_at = None
        while any(c.claimed.exists() for c in claims):
            if failures and failed_at is None:
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > 10:
                break  # a failed task quarantines its file; give it a moment, never wait forever
            time.sleep(0.2)
        worker.stop(in_sighandler=False)

    threading.Thread(target=stop_when_settled, name="once-waiter", daemon=True).start()
    try:
        worker.start()
    finally:
        inference.stop()
    failures = _internal_errors_since(settings, started) or failures
    left = [c for c in claims if c.claimed.exists()]
    if failures or left:
        console.print(f"[red]{len(failures)} task(s) failed (their files are quarantined as internal_error); "
                      f"{len(left)} file(s) stay claimed and are retried at the next start: {failures[:3]}")
        raise typer.Exit(1)
    console.print(f"processed {len(claims)} file(s)")


def _internal_errors_since(settings: Settings, started: float) -> list[str]:
    """Classify failures happen in the inference process; the database is where this process sees them."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from ingest.reasons import Reason
    from worker.db.models import Document
    from worker.db.session import session_scope

    since = datetime.fromtimestamp(started, UTC)
    with session_scope(settings.sqlalchemy_url) as session:
        rows = session.scalars(select(Document.sha256).where(
            Document.reason == Reason.INTERNAL_ERROR.value, Document.processed_at >= since)).all()
    return [f"{sha[:12]}: {Reason.INTERNAL_ERROR.value}" for sha in rows]


@app.command()
def watch(
    inbox: InboxOption = None,
    once: Annotated[bool, typer.Option(help="claim what is there now, enqueue it, exit")] = False,
    poll: PollOption = False,
) -> None:
    """The watcher half: claims complete files and queues them for workers."""
    settings = get_settings()
    _prepare(settings, need_model=False)
    watcher = _watcher(inbox, poll, settings)
    if once:
        console.print(f"queued {len(watcher.run_once())} file(s)")
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
) -> None:
    """The worker half: consumes the queues, decodes, classifies and stores."""
    settings = get_settings()
    names = [q.strip() for q in queues.split(",") if q.strip()]
    _prepare(settings, need_model="infer" in names)
    if "infer" in names:
        from worker import tasks

        tasks.engine_for_worker(callers=concurrency if pool == "threads" else 1)
    _celery_worker(names, pool, concurrency, loglevel).start()


@app.command()
def results(
    format: Annotated[str, typer.Option("--format", "-f", help="table, json or csv")] = "table",
) -> None:
    """One row per page: file, status, the model's probabilities and the labels over threshold."""
    from worker.db.migrate import upgrade
    from worker.db.queries import result_rows
    from worker.db.session import session_scope

    settings = get_settings()
    settings.ensure_dirs()
    upgrade(settings.sqlalchemy_url)
    with session_scope(settings.sqlalchemy_url) as session:
        rows = result_rows(session)
    labels = list(dict.fromkeys(label for row in rows for label in row["probabilities"]))
    if format == "json":
        out.print_json(json.dumps(rows))
    elif format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["sha256", "path", "page", "status", "reason", "model_version", *labels, "labels"])
        for row in rows:
            writer.writerow([row["sha256"], row["path"], row["page"], row["status"], row["reason"] or "",
                             row["model_version"] or "", *[row["probabilities"].get(lb, "") for lb in labels],
                             " ".join(row["labels"])])
        sys.stdout.write(buffer.getvalue())
    elif format == "table":
        table = Table(title=f"{len(rows)} page(s)")
        for column in ("document", "file", "page", "status", *labels, "labels"):
            table.add_column(column, justify="right" if column in labels else "left", no_wrap=column != "file")
        for row in rows:
            status = row["status"] + (f" ({row['reason']})" if row["reason"] else "")
            table.add_row(row["sha256"][:12], Path(row["path"]).name, str(row["page"] or "-"), status,
                          *[f"{row['probabilities'][lb]:.3f}" if lb in row["probabilities"] else "-" for lb in labels],
                          ",".join(row["labels"]) or "-")
        out.print(table)
    else:
        console.print("[red]--format must be table, json or csv")
        raise typer.Exit(2)


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


@model_app.command("init-untrained")
def model_init_untrained(
    directory: Path,
    backbone: str = "convnext_atto",
    input_size: Annotated[str, typer.Option(help="HEIGHTxWIDTH of the model input")] = "384x512",
) -> None:
    """Write a randomly initialised bundle (`trained: false`) for plumbing checks before a real model."""
    from model_training.bundle import create_untrained_bundle

    height, width = (int(v) for v in input_size.lower().split("x"))
    manifest = create_untrained_bundle(directory, backbone, (height, width))
    console.print(f"wrote untrained bundle {manifest.model_version} to {directory}")


@model_app.command("export")
def model_export(directory: Annotated[Path | None, typer.Argument()] = None) -> None:
    """Write a bundle's torch.export program (model.pt2) and ONNX file (model.onnx) next to its weights."""
    from model_training.bundle import export_bundle

    manifest = export_bundle(directory or get_settings().bundle_dir)
    console.print(f"exported {manifest.model_version}: {manifest.program}, {manifest.onnx}")


@model_app.command("recalibrate")
def model_recalibrate(
    directory: Annotated[Path, typer.Argument(help="bundle to fix in place")],
    config: Annotated[Path, typer.Option("--config", help="the config whose data and validation pages to use")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config field")] = None,
    pages: int = 2048,
) -> None:
    """Recompute a bundle's BatchNorm statistics, then its thresholds and validation metrics (a new version)."""
    from model_training.config import load_config
    from model_training.train import recalibrate_bundle

    manifest = recalibrate_bundle(directory, load_config(config, _overrides(set_)), pages)
    console.print(f"recalibrated {manifest.model_version}: validation macro AUROC "
                  f"{manifest.metrics['validation']['macro_auroc']:.4f}")


@model_app.command("show")
def model_show(directory: Annotated[Path | None, typer.Argument()] = None) -> None:
    """Print a bundle's manifest (default: the configured bundle)."""
    from model_training.bundle import load_manifest

    out.print_json(load_manifest(directory or get_settings().bundle_dir).model_dump_json())


@app.command()
def samples(
    directory: Path,
    bad: Annotated[bool, typer.Option(help="also write a broken file that must be quarantined")] = True,
) -> None:
    """Write sample ECG files (DICOM waveform, PNG, JPEG, two-page PDF) drawn from a real 12-lead recording."""
    from worker.samples import write_samples

    for path in write_samples(directory, with_bad=bad):
        out.print(str(path))


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="output folder")],
    n: Annotated[int, typer.Option("--n", help="number of records (one page each)")] = 100,
    formats: Annotated[str, typer.Option(help="comma-separated: png, jpg, tiff, pdf, dicom-waveform, dicom-sc, "
                                              "dicom-pdf, wfdb")] = "png",
    artifacts: Annotated[str, typer.Option(help="none, light, heavy or photo")] = "heavy",
    seed: Annotated[int, typer.Option(help="set seed; different seeds never share records")] = 0,
    dpi: Annotated[int | None, typer.Option(help="fixed DPI (default: random 100-300)")] = None,
    workers: Annotated[int | None, typer.Option(help="processes (default: all cores)")] = None,
    prevalence: Annotated[str | None, typer.Option(help="e.g. AF=0.3,HYP=0.2 (default: close to PTB-XL)")] = None,
    normal_fraction: Annotated[float | None, typer.Option(help="share of normal records (default 0.4)")] = None,
    family: Annotated[str, typer.Option(help="drawing family: ours (our renderer) or ecgplot (the ecg_plot "
                                             "package)")] = "ours",
) -> None:
    """Write synthetic labelled ECG pages and labels.csv (file, MI, AF, STTC, CD, HYP, subtypes, seed, style)."""
    from rich.progress import Progress

    from model_training.synth.dataset import write_dataset

    with Progress(console=console) as progress:
        task = progress.add_task("synthesising", total=n)
        shares = {k.strip(): float(v) for k, v in (p.split("=") for p in prevalence.split(","))} if prevalence else None
        labels = write_dataset(out, n, tuple(f.strip() for f in formats.split(",") if f.strip()), artifacts, seed,
                               dpi, workers, progress=lambda k: progress.advance(task, k), prevalence=shares,
                               normal_fraction=normal_fraction, family=family)
    console.print(f"wrote {n} record(s) and {labels}")


@app.command("synth-gallery")
def synth_gallery(path: Annotated[Path, typer.Argument()] = Path("docs/synthetic-samples.png")) -> None:
    """Write a contact sheet: one synthetic page per class (rows) and artifact level (columns)."""
    from model_training.synth.gallery import write_gallery

    console.print(f"wrote {write_gallery(path)}")


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", help="TOML or YAML file, or a preset name: stage1, stage2")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a field: --set total_pages=500")] = None,
    reviewed: Annotated[bool, typer.Option(help="add the database's reviewed pages as training data")] = False,
    resume: Annotated[bool, typer.Option(help="continue from the run's checkpoint when there is one")] = True,
) -> None:
    """Train one stage; stop any time (the checkpoint is kept) and run the same command again to resume."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from model_training.config import load_config
    from model_training.pages import Source
    from model_training.train import train as run_training

    cfg = load_config(config, _overrides(set_))
    if reviewed:
        from worker.db.session import session_scope
        from worker.review_export import export_reviewed

        settings = get_settings()
        folder = cfg.run_dir / "reviewed"
        with session_scope(settings.sqlalchemy_url) as session:
            count = export_reviewed(session, folder)
        console.print(f"exported {count} reviewed page(s) to {folder}")
        cfg.data.append(Source(kind="folder", path=folder, preprocessed=True))

    def show(entry: dict) -> None:
        if entry["event"] == "eval":
            console.print(f"pages {entry['pages']:>7}  loss {entry['loss']:.4f}  lr {entry['lr']:.2e}  "
                          f"macro AUROC {entry['macro_auroc']:.4f}  {entry['per_class_auroc']}")
        elif entry["event"] in ("start", "resumed", "paused", "bundle"):
            console.print({k: v for k, v in entry.items() if k != "time"})

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(what: str, advance: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total or None)
            bar.advance(tasks[what], advance)

        summary = run_training(cfg, resume=resume, on_log=show, progress=progress)
    out.print_json(json.dumps(summary))


def _overrides(items: list[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs; JSON values (numbers, lists, objects, true/false/null) are parsed."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        overrides[key.strip()] = json.loads(value) if value[:1] in "[{0123456789-tfn" else value
    return overrides


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option("--data", help="folder with labels.csv, as `ecg-intake synth` writes")],
    bundle: Annotated[Path | None, typer.Option(help="model bundle (default: the configured one)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    plots: Annotated[Path | None, typer.Option(help="folder for roc.png and calibration.png")] = None,
    bootstrap: int = 1000,
) -> None:
    """Macro and per-class AUROC with bootstrap 95% intervals, sensitivity/specificity at the bundle's thresholds."""
    from model_training.evaluate import evaluate_bundle

    report = evaluate_bundle(bundle or get_settings().bundle_dir, data, json_out, plots, n_bootstrap=bootstrap)
    table = Table(title=f"{report['bundle']} on {data} ({report['n']} pages)")
    for column in ("label", "AUROC", "95% CI", "sensitivity", "specificity", "threshold"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for label, auroc in report["per_class_auroc"].items():
        low, high = report["per_class_auroc_ci"].get(label, [float("nan")] * 2)
        table.add_row(label, f"{auroc:.4f}", f"{low:.3f}-{high:.3f}", f"{report['sensitivity'][label]:.3f}",
                      f"{report['specificity'][label]:.3f}", f"{report['thresholds'][label]:.3f}")
    low, high = report["macro_auroc_ci"]
    table.add_row("macro", f"{report['macro_auroc']:.4f}", f"{low:.3f}-{high:.3f}", "", "", "")
    out.print(table)


@bench_app.command("synth")
def bench_synth(
    n: Annotated[int, typer.Option("--n")] = 200,
    dpi: int = 200,
    artifacts: str = "heavy",
    workers: Annotated[int | None, typer.Option(help="processes (default: all cores)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
) -> None:
    """Synthetic pages per second (signal, render, artifacts, JPEG written to a temp folder)."""
    import tempfile

    from model_training.synth.dataset import write_dataset

    workers = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as folder:
        write_dataset(Path(folder) / "warmup", min(8, n), ("jpg",), artifacts, 999, dpi, 1)
        started = time.perf_counter()
        write_dataset(Path(folder) / "set", n, ("jpg",), artifacts, 998, dpi, workers)
        seconds = time.perf_counter() - started
    result = {"benchmark": "synth", "pages": n, "seconds": round(seconds, 2),
              "pages_per_second": round(n / seconds, 2), "workers": workers, "dpi": dpi, "artifacts": artifacts,
              "cpu_count": os.cpu_count()}
    _report(result, json_out)


@bench_app.command("validity")
def bench_validity(
    n: Annotated[int, typer.Option("--n", help="records per group")] = 100,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the rows as JSON here")] = None,
) -> None:
    """Share of generated records meeting their group's criterion, measured blind from the signal."""
    from model_training.synth.validity import validity_report

    rows = validity_report(n)
    table = Table(title=f"synthetic validity, {n} records per group")
    for column in ("group", "criterion", "share", "required"):
        table.add_column(column, justify="right" if column in ("share", "required") else "left")
    for row in rows:
        table.add_row(row["group"], row["criterion"], f"{row['share']:.2f}", f"{row['required']:.2f}")
    out.print(table)
    _save_json(rows, json_out)


@bench_app.command("reference")
def bench_reference(
    train_n: Annotated[int, typer.Option("--train")] = 3000,
    test_n: Annotated[int, typer.Option("--test")] = 600,
    epochs: int = 4,
    artifacts: str = "heavy",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
) -> None:
    """How hard the synthetic set is: a small five-block CNN, fixed budget, AUROC on unseen seeds."""
    from model_training.synth.reference import run_reference

    result = run_reference(train_n, test_n, epochs, artifacts=artifacts)
    _report({"benchmark": "reference", **{k: v for k, v in result.items() if k != "history"}}, None)
    _save_json(result, json_out)


@bench_app.command("recipe")
def bench_recipe(
    arms: Annotated[str, typer.Option(help="comma-separated arms of model_training.recipe_bench.ARMS")] = (
        "plain_cnn,convnext_ecg,convnext_atto_stage1"),
    train_n: Annotated[int, typer.Option("--train")] = 2000,
    val_n: Annotated[int, typer.Option("--val")] = 300,
    epochs: int = 3,
    json_out: Annotated[Path | None, typer.Option("--json", help="merge each arm's result into this JSON file")] = None,
    speed: Annotated[bool, typer.Option(help="only time one training step per arm, back to back")] = False,
    train_family: Annotated[str, typer.Option(help="train on ours, ecgplot or both (leave-one-family-out)")] = "ours",
) -> None:
    """Short runs at equal pages seen: what each ConvNeXt trait costs, in style and on a held-out drawing family."""
    from model_training.recipe_bench import measure_speed, run_recipe_bench, summary_rows

    chosen = [a.strip() for a in arms.split(",") if a.strip()]
    if speed:
        _report({"benchmark": "recipe-speed", **measure_speed(chosen, json_out=json_out)}, None)
        return
    report = run_recipe_bench(chosen, train_n, val_n, epochs, json_out=json_out, train_family=train_family,
                              on_arm=lambda arm, r: console.print(f"{arm}: {r['train_seconds']} s, "
                                                                  f"ours {r['ours_heavy']}, "
                                                                  f"ecgplot {r['ecgplot_clean']}/{r['ecgplot_heavy']}"))
    table = Table(title=f"bench recipe: {train_n} training pages, {epochs} epochs, macro AUROC")
    columns = ("arm", "parameters", "step_seconds", "ours_heavy", "ecgplot_clean", "ecgplot_heavy", "held_out_mean")
    for column in columns:
        table.add_column(column, justify="left" if column == "arm" else "right")
    for row in summary_rows(report):
        table.add_row(*(str(row[column]) for column in columns))
    out.print(table)


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
    import numpy as np

    from ingest.decode import decode
    from ingest.preprocess import clean
    from model_training.bundle import load_manifest

    settings = get_settings()
    manifest = load_manifest(settings.bundle_dir)
    chosen = tuple(s.strip() for s in use.split(",") if s.strip()) if use else manifest.preprocess_steps
    _, pages = decode(file, settings.decode_limits())
    if steps:
        steps.mkdir(parents=True, exist_ok=True)
    for page in pages:
        result = clean(page.image, tuple(manifest.input_size), chosen, keep_stages=bool(steps or sheet))
        if sheet and page.page_no == 1:
            tiles = [cv2.copyMakeBorder(cv2.resize(image, (480, round(image.shape[0] * 480 / image.shape[1]))),
                                        30, 4, 4, 4, cv2.BORDER_CONSTANT, value=255) for _, image in result.stages]
            for tile, (name, _) in zip(tiles, result.stages, strict=True):
                cv2.putText(tile, name, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 0, 2, cv2.LINE_AA)
            height = max(t.shape[0] for t in tiles)
            tiles = [cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=255) for t in tiles]
            rows = [np.hstack(tiles[i : i + 4] + [np.full_like(tiles[0], 255)] * (4 - len(tiles[i : i + 4])))
                    for i in range(0, len(tiles), 4)]
            cv2.imwrite(str(sheet), np.vstack(rows))
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


@bench_app.command("preprocess")
def bench_preprocess(
    deskew_pages: int = 200,
    flat_pages: int = 50,
    time_pages: int = 40,
    scale_pages: int = 200,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
) -> None:
    """ms per 200-DPI page on one core, deskew error, paper flatness, px/mm error and trace area found."""
    from model_training.preprocess_bench import bench_preprocess as run_bench

    result = run_bench(deskew_pages, flat_pages, time_pages, scale_pages)
    flat = {"benchmark": "preprocess", "ms_per_page": result["ms_per_page"],
            **{f"deskew_{k}": v for k, v in result["deskew"].items()},
            **{f"flatness_{k}": v for k, v in result["flatness"].items()},
            **{f"scale_{name}_{k}": v for name, scale in result["scale"].items() for k, v in scale.items()
               if k in ("trace_area_found", "share_under_3pct", "share_under_10pct", "median_error")}}
    _report(flat, None)
    _save_json(result, json_out)


@bench_app.command("ablation")
def bench_ablation(
    train_n: Annotated[int, typer.Option("--train")] = 3000,
    test_n: Annotated[int, typer.Option("--test")] = 600,
    epochs: int = 4,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
) -> None:
    """Macro AUROC with and without preprocessing, same network and budget, on heavy and clean test pages."""
    from model_training.synth.reference import run_ablation

    result = run_ablation(train_n, test_n, epochs)
    table = Table(title=f"preprocessing ablation: small CNN, {train_n} heavy pages, {epochs} epochs")
    for column in ("preprocessing", "heavy test macro AUROC", "clean test macro AUROC"):
        table.add_column(column, justify="left" if column == "preprocessing" else "right")
    for arm, scores in result["arms"].items():
        table.add_row(arm, f"{scores['heavy']['macro_auroc']:.4f}", f"{scores['clean']['macro_auroc']:.4f}")
    out.print(table)
    _save_json(result, json_out)


@bench_app.command("decode")
def bench_decode(
    n: Annotated[int, typer.Option("--n", help="files per kind")] = 30,
    dpi: int = 200,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
) -> None:
    """Decode (+ preprocess) pages/s per input kind on one core, against the CPU model's images/s."""
    from worker.benchmarks import bench_decode as run_bench

    settings = get_settings()
    result = run_bench(settings.bundle_dir, n=n, dpi=dpi)
    table = Table(title=f"bench decode: {dpi} DPI, one process; CPU model {result['model_images_per_s']} images/s "
                        f"at {result['input_size'][0]}x{result['input_size'][1]}")
    columns = ("kind", "pages", "decode_pages_per_s", "decode_preprocess_pages_per_s", "ms_per_page",
               "ratio_to_model")
    for column in columns:
        table.add_column(column, justify="left" if column == "kind" else "right")
    for row in result["kinds"]:
        table.add_row(*(str(row[c]) for c in columns))
    out.print(table)
    _save_json(result, json_out)


@bench_app.command("engine")
def bench_engine(
    batch_sizes: Annotated[str, typer.Option(help="comma-separated batch sizes")] = "1,8,32",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
) -> None:
    """Images/s per available backend and batch size for the configured bundle (ECG_INTAKE_BUNDLE)."""
    from worker.benchmarks import bench_engine as run_bench

    settings = get_settings()
    result = run_bench(settings.bundle_dir, tuple(int(b) for b in batch_sizes.split(",")), settings.torch_threads,
                       cache_dir=settings.engine_cache_dir)
    table = Table(title=f"bench engine: {result['backbone']} at {result['input_size'][0]}x{result['input_size'][1]} "
                        f"on {result['device']} ({result['cpu_count']} CPUs)")
    for column in ("engine", "batch_size", "images_per_s"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for row in result["rows"]:
        table.add_row(row["engine"], str(row["batch_size"]), str(row["images_per_s"]))
    out.print(table)
    for kind, reason in result["skipped"].items():
        out.print(f"skipped {kind}: {escape(reason)}", highlight=False)
    _save_json(result, json_out)


@bench_app.command("pipeline")
def bench_pipeline(
    pages: int = 500,
    database_url: Annotated[str | None, typer.Option(help="PostgreSQL server for the services run; a fresh "
                                                          "database is created on it and dropped")] = None,
    broker_url: Annotated[str | None, typer.Option(help="Redis or AMQP broker for the services run")] = None,
    latency_drops: int = 20,
    stable_seconds: float = 2.0,
    file_format: Annotated[str, typer.Option("--format", help="file type of the generated batch")] = "jpg",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
) -> None:
    """Pages/s inbox to database (embedded, and Redis + PostgreSQL when given) against the best CPU engine."""
    from worker.pipeline_bench import bench_pipeline as run_bench

    settings = get_settings()
    result = run_bench(settings.bundle_dir, pages, database_url, broker_url, latency_drops, stable_seconds,
                       file_format)
    table = Table(title=f"bench pipeline: {pages} {file_format} pages; best CPU engine "
                        f"{result['best_cpu_engine']['engine']} batch {result['best_cpu_engine']['batch_size']}: "
                        f"{result['best_cpu_engine']['images_per_s']} images/s")
    for column in ("setup", "pages", "seconds", "pages_per_s", "efficiency", "quarantined"):
        table.add_column(column, justify="left" if column == "setup" else "right")
    for setup in ("embedded", "services"):
        if setup in result:
            row = result[setup]
            table.add_row(setup, *(str(row[c]) for c in ("pages", "seconds", "pages_per_s", "efficiency",
                                                          "quarantined")))
    out.print(table)
    if "latency" in result:
        latency = result["latency"]
        out.print(f"single-file latency over {latency['drops']} drops (stable_seconds={latency['stable_seconds']}): "
                  f"p50 {latency['p50_s']} s, p95 {latency['p95_s']} s, max {latency['max_s']} s")
    _save_json(result, json_out)


def _save_json(result: dict | list, json_out: Path | None) -> None:
    """Every bench command's `--json FILE`."""
    if json_out:
        json_out.write_text(json.dumps(result, indent=2) + "\n")


def _report(result: dict, json_out: Path | None) -> None:
    table = Table(title=f"bench {result['benchmark']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    out.print(table)
    _save_json(result, json_out)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False)])
    logging.getLogger("celery").setLevel(logging.WARNING)
    for noisy in ("kombu", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app()


if __name__ == "__main__":
    main()
