"""Shared fixtures: a real small model bundle, isolated data homes, the CLI, real servers and the review site.

The code behind them lives in tests/helpers/; test files import from there, never from one another.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import skips
from tests.helpers.bundle import TEST_INPUT_SIZE
from tests.helpers.cli import Cli
from tests.helpers.servers import PostgresServer, RedisServer

if TYPE_CHECKING:
    from tests.helpers.review import ReviewSite

def pytest_configure(config: pytest.Config) -> None:
    """A skip not named in tests/helpers/skips.py fails the run: a check that never ran is a hole."""
    skips.register(config)


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real convnext_atto bundle with random weights, marked untrained, as the issue asks until step 5."""
    from model_training.bundle import create_untrained_bundle

    directory = tmp_path_factory.mktemp("bundle")
    create_untrained_bundle(directory, "convnext_atto", TEST_INPUT_SIZE)
    return directory


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def base_env(home: Path, bundle_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_INTAKE_")}
    env.update({
        "ECG_INTAKE_HOME": str(home),
        "ECG_INTAKE_BUNDLE": str(bundle_dir),
        "ECG_INTAKE_ENGINE_CACHE": str(bundle_dir.parent / "engine-cache"),  # one ONNX export for the session
        "ECG_INTAKE_STABLE_SECONDS": "0.5",
        "ECG_INTAKE_POLL_INTERVAL": "0.2",
        "ECG_INTAKE_TORCH_THREADS": "2",
        "ECG_INTAKE_INGEST_CONCURRENCY": "1",  # one ingest process per `run`; tests of several set their own
        # reading a page back loads the segmenter and takes about a second a page in every `run`: the tests of
        # digitising (test_waveforms, test_metrics, the review site) turn it on, as it is by default
        "ECG_INTAKE_DIGITISE": "false",
        "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture
def cli(base_env: dict[str, str], tmp_path: Path) -> Cli:
    return Cli(base_env, tmp_path)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database in the suite's cluster for one test."""
    return postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def review_env() -> dict[str, str]:
    """Extra ECG_INTAKE_* settings for the module's review server; a test module overrides this fixture."""
    return {}


@pytest.fixture(scope="module")
def review_site(bundle_dir: Path, review_env: dict[str, str],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReviewSite]:
    """The real `ecg-intake review` server over a filled database, one per test module (tests there share its
    users, sessions and login counts)."""
    from tests.helpers.review import serve_review  # the database and the web stack only where a module asks

    with serve_review(tmp_path_factory.mktemp("review"), bundle_dir, review_env) as site:
        yield site
