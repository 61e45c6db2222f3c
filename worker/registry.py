"""The model registry: every model version in `model_versions`, and which one is champion.

Workers serve the champion. The configured bundle (`ECG_INTAKE_BUNDLE`, default the shipped model) only
seeds the registry: it becomes champion when there is none. From then on the champion changes by
promotion (the nightly job, or `ecg-intake model promote`) or rollback, and running workers switch to it
between tasks (`worker.serving`, which owns what serves).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingest.reasons import InstallationError
from model_training.manifest import MANIFEST, BundleError, Manifest, check_compatible, load_manifest
from worker.db.models import ModelStatus, ModelVersion
from worker.db.queries import champion, model_version_named, previous_champion, record_event
from worker.db.session import session_scope

log = logging.getLogger(__name__)
_warned: dict[str, bool] = {}  # champions whose "serving X, not the configured bundle" line was logged


class RegistryError(Exception):
    """A registry change that cannot be made as asked; the message says why."""


def register(session: Session, manifest: Manifest, bundle_dir: Path, status: str = ModelStatus.CANDIDATE,
             metrics: dict | None = None) -> ModelVersion:
    """The bundle's row, created on first sight; an existing row keeps its status."""
    found = model_version_named(session, manifest.model_version)
    if found is not None:
        return found
    row = ModelVersion(name=manifest.model_version, bundle_path=str(Path(bundle_dir).resolve()),
                       manifest=manifest.model_dump(mode="json"), metrics=metrics or manifest.metrics, status=status)
    session.add(row)
    session.flush()
    return row


def promote(session: Session, row: ModelVersion, actor: str, why: str) -> ModelVersion | None:
    """Make `row` champion and retire the one before it (returned); recorded as an audit event. A bundle this
    code cannot serve end to end (`check_compatible`) is refused with the reason."""
    if row.status == ModelStatus.CHAMPION:
        raise RegistryError(f"{row.name} is already the champion")
    try:
        check_compatible(Manifest.model_validate(row.manifest))
    except (BundleError, ValueError) as exc:
        raise RegistryError(f"{row.name} cannot be served here, so it is not promoted: {exc}") from exc
    old = champion(session)
    if old is not None:
        old.status = ModelStatus.RETIRED
    row.status, row.promoted_at = ModelStatus.CHAMPION, datetime.now(UTC)
    record_event(session, actor, "model_promoted", details={"model": row.name, "replaced": old.name if old else None,
                                                            "why": why})
    session.flush()
    return old


def rollback(session: Session, actor: str) -> tuple[ModelVersion, ModelVersion]:
    """Put the previous champion back; the current one is marked rejected so a later rollback skips it.

    Returns (the version rolled back, the version now serving).
    """
    current = champion(session)
    if current is None:
        raise RegistryError("there is no champion to roll back")
    restored = previous_champion(session, current)
    if restored is None:
        raise RegistryError(f"{current.name} has no earlier champion to go back to")
    current.status = ModelStatus.REJECTED
    restored.status = ModelStatus.CHAMPION  # promoted_at stays: the next rollback goes further back
    record_event(session, actor, "model_rolled_back", details={"model": current.name, "restored": restored.name})
    session.flush()
    return current, restored


def champion_bundle(url: str, configured: Path) -> tuple[int, Path]:
    """(model version id, bundle directory) of the champion; the configured bundle is registered as champion
    when the registry has none. A champion whose bundle is not on this machine is an installation fault."""
    for _attempt in range(3):
        with session_scope(url) as session:
            row = champion(session)
            if row is None:
                manifest = load_manifest(configured)
                existing = model_version_named(session, manifest.model_version)
                if existing is not None:  # registered (e.g. rolled back or retired) but no champion left
                    existing.status, existing.promoted_at = ModelStatus.CHAMPION, datetime.now(UTC)
                    row = existing
                else:
                    row = register(session, manifest, configured, ModelStatus.CHAMPION)
                    row.promoted_at = datetime.now(UTC)
                try:
                    session.flush()
                except IntegrityError:  # another worker registered it at the same moment
                    session.rollback()
                    continue
                log.info("registered %s from %s as champion", row.name, configured)
            path = Path(row.bundle_path)
            if not (path / MANIFEST).is_file():
                raise InstallationError(f"champion {row.name}: its bundle {path} is not on this machine "
                                  "(models must live on storage every worker reads)")
            if path.resolve() != Path(configured).resolve() and not _warned.get(row.name):
                _warned[row.name] = True
                log.info("serving champion %s from %s (the configured bundle %s only seeds an empty registry)",
                         row.name, path, configured)
            return row.id, path
    raise RuntimeError("could not register the configured bundle as champion")
