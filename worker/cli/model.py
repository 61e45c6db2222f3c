"""Model bundles (`model`), and the commands that train, evaluate and clean pages with this installation's
settings: its configured bundle, decode limits and database of reviewed pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from worker.cli.common import console, out
from worker.settings import get_settings

model_app = typer.Typer(help="Model bundles.", no_args_is_help=True)
app = typer.Typer(no_args_is_help=True)  # train, evaluate, preprocess: merged into the top level


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
