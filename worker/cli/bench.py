"""The serving benchmarks: decode, engine, pipeline (merged into `bench` with the training side's)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from worker.cli.common import out, save_json
from worker.settings import get_settings

bench_app = typer.Typer(no_args_is_help=True)  # decode, engine, pipeline


@bench_app.command("decode")
def bench_decode(
    n: Annotated[int, typer.Option("--n", help="files per kind")] = 30,
    dpi: int = 200,
    accuracy_set: Annotated[Path | None, typer.Option(
        "--accuracy-set", help="a labelled folder (labels.csv, as `evaluate --data` takes): macro AUROC of the "
                               "bundle with full-resolution and with working-copy decoding")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
) -> None:
    """Core-ms per page per input kind, full-resolution against working-copy decoding, and page-file encoding."""
    from worker.bench.decode import bench_decode as run_bench

    settings = get_settings()
    result = run_bench(settings.bundle_dir, n=n, dpi=dpi, accuracy_set=accuracy_set)
    table = Table(title=f"bench decode: {dpi} DPI, core-ms per page on one core (full -> working copy); CPU model "
                        f"{result['model_images_per_s']} images/s at {result['input_size'][0]}x"
                        f"{result['input_size'][1]}")
    columns = ("kind", "pages", "full_decode_ms", "working_decode_ms", "full_clean_ms", "working_clean_ms",
               "full_total_ms", "working_total_ms", "speedup", "working_pages_per_s", "ratio_to_model")
    for column in columns:
        table.add_column(column, justify="left" if column == "kind" else "right")
    for row in [*result["kinds"], {"kind": "all", **result["total"]}]:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    out.print(table)
    files = Table(title="page files: encode core-ms and bytes")
    for column in ("image", "format", "encode_ms", "bytes"):
        files.add_column(column, justify="left" if column in ("image", "format") else "right")
    for image, entry in result["page_files"].items():
        for row in entry["formats"]:
            files.add_row(f"{image} {'x'.join(map(str, entry['shape']))}", row["format"], str(row["encode_ms"]),
                          str(row["bytes"]))
    out.print(files)
    for row in result["pdf_options"]:
        out.print(f"pdf {row['option']}: {row['core_ms_per_page']} core-ms/page", highlight=False)
    for row in result["xml_prepass"]:
        out.print(f"{row['kind']} XML safety pre-pass: {row['prepass_ms']} of {row['decode_ms']} core-ms per file "
                  f"({row['kib_per_file']} KiB)", highlight=False)
    agreement = result["format_agreement"]
    if agreement:
        out.print(f"one recording in {', '.join(agreement['kinds'])}: probabilities spread by at most "
                  f"{agreement['max_spread_within_recording']} (mean {agreement['mean_spread_within_recording']}) "
                  "over "
                  f"{agreement['recordings']} recordings; across recordings "
                  f"{agreement['mean_spread_across_recordings']}", highlight=False)
    if "accuracy" in result:
        acc = result["accuracy"]
        out.print(f"accuracy on {acc['files']} files: macro AUROC full {acc['macro_auroc_full']}, working copy "
                  f"{acc['macro_auroc_working_copy']}, difference {acc['macro_auroc_diff']} "
                  f"(95% CI {acc['macro_auroc_diff_ci']})", highlight=False)
    save_json(result, json_out)


@bench_app.command("engine")
def bench_engine(
    batch_sizes: Annotated[str, typer.Option(help="comma-separated batch sizes")] = "1,8,32",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
) -> None:
    """Images/s per available backend and batch size for the configured bundle (ECG_INTAKE_BUNDLE)."""
    from worker.bench.engine import bench_engine as run_bench

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
    save_json(result, json_out)


@bench_app.command("pipeline")
def bench_pipeline(
    pages: int = 500,
    database_url: Annotated[str | None, typer.Option(help="PostgreSQL server for the services run; a fresh "
                                                          "database is created on it and dropped")] = None,
    broker_url: Annotated[str | None, typer.Option(help="Redis or AMQP broker for the services run")] = None,
    latency_drops: int = 20,
    stable_seconds: float = 2.0,
    file_format: Annotated[str, typer.Option("--format", help="file type of the generated batch")] = "jpg",
    ingest_workers: Annotated[str, typer.Option(help="comma-separated counts of ingest processes to run the batch "
                                                     "with; the largest is the one judged")] = "1,2",
    gpu_images_per_s: Annotated[float, typer.Option(help="the cuda engine's rate for the GPU estimate when no GPU "
                                                         "is here to measure it")] = 3000.0,
    batch_size: Annotated[int | None, typer.Option(help="run the pipeline at this batch size (default: the "
                                                        "fastest measured)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
) -> None:
    """Pages/s inbox to database (embedded, and Redis + PostgreSQL when given) against the bound of its stages."""
    from worker.bench.pipeline import bench_pipeline as run_bench
    from worker.bench.stages import STAGES

    settings = get_settings()
    result = run_bench(settings.bundle_dir, pages, database_url, broker_url, latency_drops, stable_seconds,
                       file_format, tuple(int(n) for n in ingest_workers.split(",")), gpu_images_per_s, batch_size)
    setups = [setup for setup in ("embedded", "services") if setup in result]
    costs = Table(title="core-ms per page, each stage alone")
    costs.add_column("stage")
    for setup in setups:
        costs.add_column(setup, justify="right")
    for stage in (*STAGES, "sum"):
        costs.add_row(stage, *(str(result[s]["stage_costs"]["core_ms_per_page"][stage] if stage != "sum" else
                                   result[s]["stage_costs"]["sum_core_ms_per_page"]) for s in setups))
    out.print(costs)
    table = Table(title=f"bench pipeline: {pages} {file_format} pages on {result['cpu_count']} cores; engine "
                        f"{result['best_cpu_engine']['engine']} batch {result['best_cpu_engine']['batch_size']}")
    columns = ("pages_per_s", "bound_pages_per_s", "efficiency", "cpu_utilisation", "quarantined")
    for column in ("setup", "ingest workers: pages/s", *columns):
        table.add_column(column, justify="left" if column == "setup" else "right")
    for setup in setups:
        row = result[setup]
        by_workers = ", ".join(f"{n}: {v}" for n, v in row["pages_per_s_by_ingest_workers"].items())
        table.add_row(setup, by_workers, *(str(row[c]) for c in columns))
    out.print(table)
    gpu = result["gpu_estimate"]
    out.print(f"GPU estimate: {gpu['intake_cores_per_gpu']} intake cores per GPU at {gpu['gpu_images_per_s']:g} "
              f"images/s ({gpu['gpu_rate_source']}), {gpu['intake_core_ms_per_page']} intake core-ms per page")
    if "latency" in result:
        latency = result["latency"]
        out.print(f"single-file latency over {latency['drops']} drops (stable_seconds={latency['stable_seconds']}): "
                  f"p50 {latency['p50_s']} s, p95 {latency['p95_s']} s, max {latency['max_s']} s")
    save_json(result, json_out)


@bench_app.command("review")
def bench_review(
    database_url: Annotated[str, typer.Option(help="a PostgreSQL server URL; a fresh database is made and dropped")] = (
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
    pages: int = 100_000,
    requests: int = 30,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
) -> None:
    """Server time of the review worklist and page view with PAGES predictions in PostgreSQL."""
    from worker.bench.review import bench_review as run_bench

    result = run_bench(database_url, pages, requests)
    table = Table(title=f"bench review: {result['pages']:,} predicted pages in PostgreSQL "
                        f"(filled in {result['fill_seconds']} s)")
    for column in ("route", "requests", "p50_ms", "p95_ms", "max_ms"):
        table.add_column(column, justify="left" if column == "route" else "right")
    for route, row in result["routes"].items():
        table.add_row(route, *(str(row[c]) for c in ("requests", "p50_ms", "p95_ms", "max_ms")))
    out.print(table)
    save_json(result, json_out)


@bench_app.command("soak")
def bench_soak(
    files: Annotated[int, typer.Option(help="files in the soak set (good and bad together)")] = 5000,
    bad_fraction: Annotated[float, typer.Option(help="share of damaged files: corrupt, truncated, empty, "
                                                     "wrong type, not an ECG")] = 0.05,
    backend: Annotated[str, typer.Option(help="embedded (`run`: SQLite, file queue), services (watch + workers "
                                              "on Redis + PostgreSQL) or both, one after the other")] = "embedded",
    redis_url: Annotated[str | None, typer.Option(help="Redis broker for the services run")] = None,
    database_url: Annotated[str | None, typer.Option(help="PostgreSQL server for the services run; a fresh "
                                                          "database is created on it and dropped")] = None,
    backlog: Annotated[int, typer.Option(help="most files dropped and not yet settled at any time")] = 64,
    interval: Annotated[float, typer.Option(help="seconds between memory samples")] = 1.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
    memory_limit: Annotated[float, typer.Option(help="largest RSS growth, last fifth over the second")] = 0.10,
    throughput_limit: Annotated[float, typer.Option(help="largest files/s drop, last fifth against the second")]
        = 0.25,
    keep: Annotated[Path | None, typer.Option(help="work in this folder and keep it: inboxes, homes, database, "
                                                   "logs")] = None,
) -> None:
    """Many mixed files through the real service: no loss, no duplicates, flat memory, steady files/s.

    Exits 1 when a check fails; the services backend needs --redis-url and --database-url (no servers are started).
    """
    from worker.bench.soak import bench_soak as run_bench

    if backend != "embedded" and not (redis_url and database_url):
        out.print(f"[red]--backend {backend} needs --redis-url and --database-url: bench soak does not start "
                  "servers (as bench pipeline does not); give a Redis and a PostgreSQL server to use", highlight=False)
        raise typer.Exit(2)
    settings = get_settings()
    result = run_bench(settings.bundle_dir, files, bad_fraction, backend, database_url, redis_url, settings.engine,
                       settings.batch_size, backlog=backlog, interval=interval,
                       progress=lambda message: out.print(f"bench soak: {message}", highlight=False),
                       checkpoint=lambda partial: save_json(partial, json_out), memory_limit=memory_limit,
                       throughput_limit=throughput_limit, keep=keep)
    table = Table(title=f"bench soak: {result['files']} files, {result['bad_files']} bad "
                        f"({result['distinct_contents']} distinct contents), backlog {backlog}")
    for column in ("backend", "files/s", "files/s per fifth", "lost", "duplicates", "unexpected",
                   "RSS start/warm/end MB", "RSS growth", "checks failed"):
        table.add_column(column, justify="left" if column in ("backend", "checks failed") else "right")
    for name, run in result["backends"].items():
        memory = run["memory"]
        rss = (f"{memory['start_mb']:.0f}/{memory['warm_mb']:.0f}/{memory['end_mb']:.0f}" if memory.get("growth")
               is not None else "-")
        failed = [check for check, verdict in run["checks"].items() if not verdict["passed"]]
        table.add_row(name, str(run["files_per_s"]), " ".join(str(r) for r in run["throughput"]["per_fifth"]),
                      str(run["loss"]["total"]), str(run["duplicates"]["total"]), str(run["unexpected_count"]),
                      rss, f"{memory['growth']:+.1%}" if memory.get("growth") is not None else "-",
                      ", ".join(failed) or "none")
    out.print(table)
    for name, run in result["backends"].items():
        for check, verdict in run["checks"].items():
            mark = "[green]pass[/green]" if verdict["passed"] else "[red]FAIL[/red]"
            out.print(f"{name} {check}: {mark} {escape(verdict['detail'])}", highlight=False)
    save_json(result, json_out)
    if not result["passed"]:
        raise typer.Exit(1)
