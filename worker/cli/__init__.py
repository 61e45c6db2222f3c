"""The `ecg-intake` command: run, watch, worker, receive, results, db, model, samples."""

from __future__ import annotations

import typer
from pydantic import ValidationError

from model_training.cli import app as training_app
from model_training.cli import bench_app as training_bench_app
from model_training.cli import model_app as training_model_app
from worker.cli import bench, model, receive, review, service
from worker.cli.common import console
from worker.logs import LogFormat, setup_logging
from worker.settings import get_settings

app = typer.Typer(help="Classify scanned ECGs dropped into watched folders.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
bench_app = typer.Typer(help="Benchmarks; each prints a table and can write JSON.", no_args_is_help=True)
bench_app.add_typer(training_bench_app)  # the data and training benchmarks (model_training/cli.py)
bench_app.add_typer(bench.bench_app)  # decode, engine, pipeline
model.model_app.add_typer(training_model_app)  # init-untrained, export, recalibrate beside the registry's commands
app.add_typer(service.app)  # run, watch, worker, results, doctor
app.add_typer(training_app)  # samples, synth, synth-gallery, train, evaluate
app.add_typer(model.app)  # retrain, preprocess
app.add_typer(service.db_app, name="db")
app.add_typer(model.model_app, name="model")
app.add_typer(bench_app, name="bench")
app.add_typer(review.app)  # review
app.add_typer(receive.app)  # receive: the DICOM C-STORE receiver
app.add_typer(review.users_app, name="users")


def _log_format() -> LogFormat:
    try:
        return get_settings().log_format
    except ValidationError:  # the command that reads the settings reports what is wrong, in text
        return "text"


def main() -> None:
    setup_logging(_log_format(), console)
    app(obj=model.installation())  # the training commands' view of this installation (model_training.cli)
