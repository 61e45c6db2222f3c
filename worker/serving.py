"""The one owner of what serves: the champion bundle, its manifest, the preparation its pages need, and the
engine that runs it, swapped in place when another champion is promoted.

Every question about the serving model is answered here from the registry's champion (`worker.registry`):
intake prepares pages for `champion(settings).preparation`, classify runs `serving_engine()`, the doctor,
the `preprocess` command, the review UI and the exports read `serving_bundle` and `serving_manifest`.
Workers ask the registry again every `champion_check_seconds`; a page made for another model's geometry is
prepared again before that model sees it (`worker.classify`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from ingest.preprocess import Preparation
from ingest.reasons import InstallationError
from model_training.manifest import BundleError, Manifest, check_compatible, current_manifest
from worker.db.models import ModelVersion
from worker.db.queries import champion as champion_row
from worker.db.session import session_scope
from worker.engine import Engine, load_engine
from worker.engine.batching import BatchingEngine
from worker.registry import champion_bundle
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Champion:
    """The model that serves now: its registry id, where its bundle lives, and its manifest."""

    model_version_id: int
    bundle_dir: Path
    manifest: Manifest

    @property
    def preparation(self) -> Preparation:
        return self.manifest.preparation


_lock = threading.Lock()
_champions: dict[str, tuple[float, Champion]] = {}  # database URL -> (when asked, the answer)


def champion(settings: Settings) -> Champion:
    """The champion, asked of the registry at most every `champion_check_seconds`; an empty registry gets
    the configured bundle as champion. A champion this code cannot serve is an installation fault."""
    with _lock:
        cached = _champions.get(settings.sqlalchemy_url)
        if cached is not None and time.monotonic() - cached[0] < settings.champion_check_seconds:
            return cached[1]
        model_version_id, bundle_dir = champion_bundle(settings.sqlalchemy_url, settings.bundle_dir)
        manifest = current_manifest(bundle_dir)
        try:
            check_compatible(manifest)
        except BundleError as exc:  # the installation's fault: no file is to blame for it
            raise InstallationError(f"the champion cannot be served here: {exc}") from exc
        found = Champion(model_version_id, bundle_dir, manifest)
        _champions[settings.sqlalchemy_url] = (time.monotonic(), found)
        return found


def _registered_champion(settings: Settings) -> ModelVersion | None:
    """The registry's champion row, read only; None while the registry is empty or unreadable (no database
    yet, or one the doctor reports on its own)."""
    try:
        with session_scope(settings.sqlalchemy_url) as session:  # the factory keeps loaded rows after commit
            return champion_row(session)
    except SQLAlchemyError:
        return None


def serving_bundle(settings: Settings) -> Path:
    """The bundle workers serve: the champion's, or the configured one while the registry is empty or
    unreadable. Read-only (registers nothing), for checks, commands and the review UI."""
    row = _registered_champion(settings)
    return Path(row.bundle_path) if row is not None else settings.bundle_dir


def serving_manifest(settings: Settings) -> Manifest:
    """The serving model's manifest, for the labels shown and the geometry reported: the registry's record
    of the champion (its bundle need not be on this machine, e.g. for the review UI), else the configured
    bundle's."""
    row = _registered_champion(settings)
    if row is None or not row.manifest:
        return current_manifest(settings.bundle_dir)
    try:
        return Manifest.model_validate(row.manifest)
    except ValueError as exc:
        raise BundleError(f"the registry's record of champion {row.name} is not a manifest: {exc}") from exc


@dataclass
class _Loaded:
    """One loaded champion: its engine, its model_versions id and bundle, and how many tasks are using it now.
    The bundle tells apart two registries' champions of the same id (one process over two databases)."""

    engine: Engine
    model_version_id: int
    bundle_dir: Path
    users: int = 0


_engine_lock = threading.Lock()
_loaded: _Loaded | None = None
_callers = 1


def _current() -> _Loaded:
    """The champion's engine, loaded anew when the champion changed. Call with `_engine_lock` held."""
    global _loaded
    settings = get_settings()
    found = champion(settings)
    if _loaded is None or (_loaded.model_version_id, _loaded.bundle_dir) != (found.model_version_id,
                                                                              found.bundle_dir):
        engine = load_engine(found.bundle_dir, settings.engine, settings.torch_threads, settings.batch_size,
                             cache_dir=settings.engine_cache_dir)
        old, _loaded = _loaded, _Loaded(BatchingEngine(engine, settings.batch_size, settings.max_wait_ms, _callers),
                                        found.model_version_id, found.bundle_dir)
        if old is not None:
            log.info("now serving %s (was %s); tasks already running finish on the old model",
                     engine.manifest.model_version, old.engine.manifest.model_version)
            _retire_if_idle(old)
    return _loaded


def _retire_if_idle(loaded: _Loaded) -> None:
    if loaded is not _loaded and loaded.users == 0:
        loaded.engine.close()


def engine_for_worker(callers: int = 1) -> tuple[Engine, int]:
    """Load the champion now (a worker does this before it takes tasks) and return it with its version id.

    `callers` is how many classify tasks may run at once (the thread pool's size); their pages are
    micro-batched into shared forward passes.
    """
    global _callers
    with _engine_lock:
        _callers = callers
        loaded = _current()
    return loaded.engine, loaded.model_version_id


@contextmanager
def serving_engine() -> Iterator[tuple[Engine, int]]:
    """The champion for one task: a task that started on a model finishes on it, even if a new champion
    is loaded meanwhile; the old engine is closed once its last task is done."""
    with _engine_lock:
        loaded = _current()
        loaded.users += 1
    try:
        yield loaded.engine, loaded.model_version_id
    finally:
        with _engine_lock:
            loaded.users -= 1
            _retire_if_idle(loaded)
