"""The data and training side of `ecg-intake`: sample and synthetic files, training and evaluation, the bundles
they make, and the benchmarks of synthesis, cleaning and training recipes. `worker.cli` merges `app` into its
top level, `model_app` into `model` and `bench_app` into `bench`, and passes its `Installation`."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)  # samples, synth, synth-gallery, train, evaluate
model_app = typer.Typer(no_args_is_help=True)  # model init-untrained, export, recalibrate
# bench: synth, validity, reference, recipe, families, morphology, preprocess, ablation, digitise
bench_app = typer.Typer(no_args_is_help=True)

# The whole command's two consoles (worker.cli logs through `console` too, so logs and progress bars share it).
console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 150)  # piped output: wide enough for the table


@dataclass(frozen=True)
class Installation:
    """What the training commands take from the installation that runs them, which this layer may not import:
    the bundle they use unless told (`evaluate`, `model export`), and `train --reviewed`'s pages (written into
    a folder, their count returned). `worker.cli` passes it as the command's context object."""

    bundle_dir: Callable[[], Path]
    export_reviewed: Callable[[Path], int]


def _installation(ctx: typer.Context) -> Installation:
    if not isinstance(ctx.obj, Installation):
        raise typer.BadParameter("run this through `ecg-intake`, which knows the installation's bundle and database")
    return ctx.obj


@app.command()
def samples(
    directory: Path,
    bad: Annotated[bool, typer.Option(help="also write a broken file that must be quarantined")] = True,
) -> None:
    """Write sample ECG files (DICOM waveform, PNG, JPEG, two-page PDF) drawn from a real 12-lead recording."""
    from model_training.synth.samples import write_samples

    for path in write_samples(directory, with_bad=bad):
        out.print(str(path))


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="output folder")],
    n: Annotated[int, typer.Option("--n", help="number of records (one page each)")] = 100,
    formats: Annotated[str, typer.Option(help="comma-separated: png, jpg, tiff, pdf, dicom-waveform, dicom-sc, "
                                              "dicom-pdf, muse (GE MUSE XML), philips (Philips SierraECG XML, "
                                              "XLI), aecg (HL7 aECG XML), scp (SCP-ECG, "
                                              "uncompressed), wfdb")] = "png",
    artifacts: Annotated[str, typer.Option(help="none, light, heavy or photo")] = "heavy",
    seed: Annotated[int, typer.Option(help="set seed; different seeds never share records")] = 0,
    dpi: Annotated[int | None, typer.Option(help="fixed DPI (default: random 100-300)")] = None,
    workers: Annotated[int | None, typer.Option(help="processes (default: all cores)")] = None,
    prevalence: Annotated[str | None, typer.Option(help="e.g. AF=0.3,HYP=0.2 (default: close to PTB-XL)")] = None,
    normal_fraction: Annotated[float | None, typer.Option(help="share of normal records (default 0.4)")] = None,
    family: Annotated[str, typer.Option(help="drawing family: ours, ecgplot, dicomplot or wfdbplot "
                                             "(model_training/synth/families.py)")] = "ours",
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
    ctx: typer.Context,
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
        folder = cfg.run_dir / "reviewed"
        count = _installation(ctx).export_reviewed(folder)
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


@app.command("train-digitiser")
def train_digitiser(
    pages: Annotated[int, typer.Option(help="training pages per drawing family")] = 160,
    steps: Annotated[int, typer.Option(help="optimiser steps (12 crops of 192 px each)")] = 2000,
    held_out: Annotated[str, typer.Option(help="the drawing family left out of training, scored apart")] = "wfdbplot",
    directory: Annotated[Path | None, typer.Option("--out", help="where the weights go (default: the shipped "
                                                   "models/digitiser)")] = None,
    workers: Annotated[int, typer.Option(help="processes drawing the pages")] = max(1, (os.cpu_count() or 1)),
) -> None:
    """Train the digitiser's trace segmenter on every drawing family but `--held-out`, with exact trace masks."""
    from rich.progress import Progress

    from model_training.digitise.segment import SEGMENTER_DIR, dice_score, make_pages, train_segmenter
    from model_training.synth.families import FAMILIES

    if held_out not in FAMILIES:
        raise typer.BadParameter(f"{held_out!r} is not a drawing family ({', '.join(FAMILIES)})")
    families = tuple(f for f in FAMILIES if f != held_out)
    console.print(f"drawing {pages} pages of each of {', '.join(families)} ...")
    train_pages = make_pages(families, pages, 0, workers)
    checks = {family: make_pages((family,), 6, 900_000 + 1000 * index, workers)
              for index, family in enumerate(FAMILIES)}
    info = {"families": list(families), "held_out_family": held_out, "pages_per_family": pages,
            "command": " ".join(["ecg-intake", *sys.argv[1:]])}
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("training", total=steps)
        segmenter = train_segmenter(train_pages, [p for pages_ in checks.values() for p in pages_], steps, info,
                                    progress=lambda step, loss: bar.update(task, completed=step + 1,
                                                                           description=f"loss {loss:.3f}"))
    segmenter.info["dice_per_family"] = {
        family: round(sum(dice_score(segmenter.probabilities(x), y) for x, y in pages_) / len(pages_), 4)
        for family, pages_ in checks.items()}
    segmenter.save(directory or SEGMENTER_DIR)
    console.print(f"saved to {directory or SEGMENTER_DIR}")
    out.print_json(json.dumps(segmenter.info))


def _overrides(items: list[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs; JSON values (numbers, lists, objects, true/false/null) are parsed."""
    found: dict[str, Any] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        found[key.strip()] = json.loads(value) if value[:1] in "[{0123456789-tfn" else value
    return found


@app.command()
def evaluate(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="folder with labels.csv, as `ecg-intake synth` writes")],
    bundle: Annotated[Path | None, typer.Option(help="model bundle (default: the configured one)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    plots: Annotated[Path | None, typer.Option(help="folder for roc.png and calibration.png")] = None,
    bootstrap: int = 1000,
    against: Annotated[Path | None, typer.Option(help="another bundle: print the AUROC differences (this one "
                                                      "minus that one) with paired bootstrap intervals")] = None,
) -> None:
    """AUROC with bootstrap 95% intervals; sensitivity, specificity, calibration error and the share of normal
    ECGs with no flag, at the bundle's thresholds. With --against, the paired difference from another bundle."""
    from model_training.evaluate import compare_bundles, evaluate_bundle

    bundle = bundle or _installation(ctx).bundle_dir()
    if against is not None:
        diff = compare_bundles(against, bundle, data, json_out, n_bootstrap=bootstrap)
        table = Table(title=f"{diff['bundle']} minus {diff['baseline']} on {data} ({diff['n']} pages)")
        for column in ("label", "AUROC difference", "paired 95% CI"):
            table.add_column(column, justify="left" if column == "label" else "right")
        for label, value in diff["per_class_auroc_diff"].items():
            low, high = diff["per_class_auroc_diff_ci"][label]
            table.add_row(label, f"{value:+.4f}", f"{low:+.3f} to {high:+.3f}")
        low, high = diff["macro_auroc_diff_ci"]
        table.add_row("macro", f"{diff['macro_auroc_diff']:+.4f}", f"{low:+.3f} to {high:+.3f}")
        out.print(table)
        return
    report = evaluate_bundle(bundle, data, json_out, plots, n_bootstrap=bootstrap)
    table = Table(title=f"{report['bundle']} on {data} ({report['n']} pages)")
    for column in ("label", "AUROC", "95% CI", "sensitivity", "specificity", "ECE", "threshold"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for label, auroc in report["per_class_auroc"].items():
        low, high = report["per_class_auroc_ci"].get(label, [float("nan")] * 2)
        table.add_row(label, f"{auroc:.4f}", f"{low:.3f}-{high:.3f}", f"{report['sensitivity'][label]:.3f}",
                      f"{report['specificity'][label]:.3f}", f"{report['ece'][label]:.3f}",
                      f"{report['thresholds'][label]:.3f}")
    low, high = report["macro_auroc_ci"]
    table.add_row("macro", f"{report['macro_auroc']:.4f}", f"{low:.3f}-{high:.3f}", "", "", "", "")
    table.caption = (f"normal ECGs with no flag: {report['normal_no_flag']:.3f} "
                     f"of {report['normal_pages']} pages with no finding")
    out.print(table)


@model_app.command("init-untrained")
def model_init_untrained(
    directory: Path,
    backbone: str = "convnext_atto",
    input_size: Annotated[str, typer.Option(help="HEIGHTxWIDTH of the model input")] = "384x512",
    labels: Annotated[str | None, typer.Option(help="comma-separated label names (default: the five findings)")] = None,
) -> None:
    """Write a randomly initialised bundle (`trained: false`) for plumbing checks before a real model."""
    from model_training.bundle import create_untrained_bundle
    from model_training.manifest import LABELS

    height, width = (int(v) for v in input_size.lower().split("x"))
    names = [name.strip() for name in labels.split(",") if name.strip()] if labels else LABELS
    manifest = create_untrained_bundle(directory, backbone, (height, width), labels=names)
    console.print(f"wrote untrained bundle {manifest.model_version} to {directory}")


@model_app.command("export")
def model_export(ctx: typer.Context, directory: Annotated[Path | None, typer.Argument()] = None) -> None:
    """Write a bundle's torch.export program (model.pt2) and ONNX file (model.onnx) next to its weights."""
    from model_training.bundle import export_bundle

    manifest = export_bundle(directory or _installation(ctx).bundle_dir())
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
    save_json(rows, json_out)


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
    save_json(result, json_out)


@bench_app.command("recipe")
def bench_recipe(
    arms: Annotated[str, typer.Option(help="comma-separated arms of model_training.bench.recipe.ARMS")] = (
        "plain_cnn,convnext_ecg,convnext_atto_stage1"),
    train_n: Annotated[int, typer.Option("--train")] = 2000,
    val_n: Annotated[int, typer.Option("--val")] = 300,
    epochs: int = 3,
    json_out: Annotated[Path | None, typer.Option("--json", help="merge each arm's result into this JSON file")] = None,
    speed: Annotated[bool, typer.Option(help="only time one training step per arm, back to back")] = False,
    train_family: Annotated[str, typer.Option(help="train on ours, ecgplot or both (leave-one-family-out)")] = "ours",
) -> None:
    """Short runs at equal pages seen: what each ConvNeXt trait costs, in style and on a held-out drawing family."""
    from model_training.bench.recipe import measure_speed, run_recipe_bench, summary_rows

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


@bench_app.command("families")
def bench_families(
    held_out: Annotated[str, typer.Option(help="comma-separated families to leave out in turn (default: all)")] = "",
    train_n: Annotated[int, typer.Option("--train", help="training pages per row, from the other families")] = 1500,
    epochs: int = 3,
    preset: str = "stage1",
    json_out: Annotated[Path | None, typer.Option("--json", help="merge each row into this JSON file")] = None,
) -> None:
    """Leave one drawing family out: train on the rest of the stage 1 pages, score on the family left out."""
    from model_training.bench.families import run_leave_one_family_out
    from model_training.manifest import LABELS

    chosen = [f.strip() for f in held_out.split(",") if f.strip()] or None
    report = run_leave_one_family_out(chosen, train_n, epochs, preset, json_out=json_out,
                                      on_row=lambda f, r: console.print(f"left out {f}: {r['held_out']['macro_auroc']}"
                                                                        f" (in family {r['in_family_mean']})"))
    table = Table(title=f"bench families: convnext_ecg, {train_n} pages, {epochs} epochs, macro AUROC")
    for column in ("left out", "trained on", "held-out macro", *LABELS, "in-family macro", "gap"):
        table.add_column(column, justify="left" if column in ("left out", "trained on") else "right")
    for family, row in report["rows"].items():
        per_class = row["held_out"]["per_class_auroc"]
        table.add_row(family, "+".join(row["trained_on"]), str(row["held_out"]["macro_auroc"]),
                      *(str(per_class[label]) for label in LABELS), str(row["in_family_mean"]), str(row["gap"]))
    out.print(table)


@bench_app.command("morphology")
def bench_morphology(
    arms: Annotated[str, typer.Option(help="comma-separated arms of model_training.bench.morphology.ARMS")] = (
        "baseline,signal,distill,signal_distill,hires"),
    pages_seen: Annotated[int, typer.Option(help="pages seen by every arm")] = 6000,
    json_out: Annotated[Path | None, typer.Option("--json", help="merge each arm's result into this JSON file")] = None,
) -> None:
    """Signal head, signal teacher and more px/mm against the plain recipe at equal pages seen, on held-out families."""
    from model_training.bench.morphology import HELD_OUT, run_morphology_bench

    report = run_morphology_bench([a.strip() for a in arms.split(",") if a.strip()], pages_seen, json_out=json_out,
                                  on_arm=lambda arm, r: console.print(f"{arm}: in style {r['in_style']}, "
                                                                      f"held out {r['held_out_mean']}"))
    table = Table(title=f"bench morphology: {pages_seen} pages seen, macro AUROC")
    for column in ("arm", "minutes", "in style", *HELD_OUT, "held-out mean"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for arm, row in report["arms"].items():
        table.add_row(arm, str(round(row["seconds"] / 60, 1)), str(row["in_style"]),
                      *(str(row["held_out"].get(name, {}).get("macro_auroc")) for name in HELD_OUT),
                      str(row["held_out_mean"]))
    out.print(table)


@bench_app.command("preprocess")
def bench_preprocess(
    deskew_pages: int = 200,
    flat_pages: int = 50,
    time_pages: int = 40,
    scale_pages: int = 200,
    paper_pages: int = 40,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
) -> None:
    """ms per 200-DPI page on one core, deskew error, paper flatness, px/mm error, trace area found, and how
    much of a page survives creased, crumpled and wrinkled paper."""
    from model_training.bench.preprocess import bench_preprocess as run_bench

    result = run_bench(deskew_pages, flat_pages, time_pages, scale_pages, paper_pages)
    flat = {"benchmark": "preprocess", "ms_per_page": result["ms_per_page"],
            **{f"deskew_{k}": v for k, v in result["deskew"].items()},
            **{f"flatness_{k}": v for k, v in result["flatness"].items()},
            **{f"scale_{name}_{k}": v for name, scale in result["scale"].items() for k, v in scale.items()
               if k in ("trace_area_found", "share_under_3pct", "share_under_10pct", "median_error")},
            **{f"paper_{name}_{k}": v for name in ("crease", "crumple", "wrinkle", "all")
               for k, v in result["paper_damage"][name].items()}}
    _report(flat, None)
    save_json(result, json_out)


@bench_app.command("digitise")
def bench_digitise(
    n: Annotated[int, typer.Option("--n", help="records, each drawn in a random style of our renderer")] = 40,
    dpi: int = 200,
    family_pages: Annotated[int, typer.Option(help="pages per drawing family and artifact level")] = 20,
    families: Annotated[str, typer.Option(help="comma-separated drawing families")] = "ours,ecgplot,dicomplot,"
                                                                                      "wfdbplot",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
) -> None:
    """SNR (dB) of each lead read back against the true signal, per layout, on clean and photometrically damaged
    pages of our renderer: with the geometry known, and found on the page as `digitise` does (classical threshold
    and learned segmenter); then on every drawing family, clean and heavily damaged."""
    from model_training.bench.digitise import CONDITIONS, FAMILY_ARTIFACTS, FOUND, METHODS, family_bench
    from model_training.bench.digitise import digitise_bench as run_bench
    from model_training.synth.families import FAMILIES

    chosen = tuple(f.strip() for f in families.split(",") if f.strip())
    unknown = set(chosen) - set(FAMILIES)
    if unknown:
        raise typer.BadParameter(f"unknown families {sorted(unknown)}; one of {', '.join(FAMILIES)}")
    result = run_bench(n, dpi)
    result["families"] = family_bench(family_pages, dpi, chosen)
    table = Table(title=f"bench digitise: {n} pages of {result['family']} at {dpi} dpi")
    for column in ("reading", "condition", "layout", "leads", "median dB", "10th pct dB", ">= 12 dB"):
        table.add_column(column, justify="left" if column in ("reading", "condition", "layout") else "right")
    for method in METHODS:
        for condition in CONDITIONS:
            rows = [("all", result[method]["overall"][condition]), *result[method]["per_layout"][condition].items()]
            for layout, row in rows:
                table.add_row(method, condition, layout, str(row["leads"]), f"{row['median_db']:.1f}",
                              f"{row['p10_db']:.1f}", f"{row['share_at_least_12_db']:.2f}")
    out.print(table)
    out.print(f"layout found right: {result['layout_found']}; seconds per page: {result['seconds_per_page']}")
    by_family = Table(title=f"found on the page, {family_pages} pages per family and artifact level")
    for column in ("family", "artifacts", "reading", "median dB", "10th pct dB", ">= 12 dB", "unread leads",
                   "layout claimed", "layout right"):
        by_family.add_column(column, justify="left" if column in ("family", "artifacts", "reading") else "right")
    for family, levels in result["families"].items():
        for artifacts in FAMILY_ARTIFACTS:
            for method in FOUND:
                row = levels[artifacts][method]
                right = "-" if row["layout_right"] is None else f"{row['layout_right']:.2f}"
                name = f"{family} (held out)" if levels["held_out"] else family
                by_family.add_row(name, artifacts, method, f"{row['median_db']:.1f}", f"{row['p10_db']:.1f}",
                                  f"{row['share_at_least_12_db']:.2f}", str(row["unread"]),
                                  f"{row['layout_claimed']:.2f}", right)
    out.print(by_family)
    save_json(result, json_out)


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
    save_json(result, json_out)


def save_json(result: dict | list, json_out: Path | None) -> None:
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
    save_json(result, json_out)
