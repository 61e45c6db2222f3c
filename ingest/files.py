"""Hashing and the final moves of an original file: to the archive or to the quarantine."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.reasons import DESCRIPTIONS, Reason

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def original_name(claimed: Path) -> str:
    """The file's name as dropped, without the claim prefix `claim_path` added."""
    return claimed.name.split("__", 1)[1] if "__" in claimed.name else claimed.name


def _dated_dir(root: Path) -> Path:
    folder = root / datetime.now(UTC).strftime("%Y-%m-%d")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _unique(folder: Path, name: str) -> Path:
    """A path in `folder` that does not exist yet: nothing is ever overwritten."""
    candidate = folder / name
    stem, suffix = os.path.splitext(name)
    counter = 1
    while candidate.exists():
        candidate = folder / f"{stem}.{counter}{suffix}"
        counter += 1
    return candidate


def move(src: Path, dest: Path) -> Path:
    """Move without ever overwriting: if `dest` was taken meanwhile, a numbered sibling is used."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest = _unique(dest.parent, dest.name)
    try:
        os.rename(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copy2(src, dest)  # another file system: copy, flush, then remove the source
        with open(dest, "rb") as handle:
            os.fsync(handle.fileno())
        src.unlink()
    return dest


def destination(root: Path, sha256: str, claimed: Path) -> Path:
    """Where an original goes in the archive or quarantine: `<root>/<date>/<sha12>__<name>`.

    Planned before the move, so the database records the place first and a crash in between
    leaves a record that says exactly where the file must still go.
    """
    return _unique(_dated_dir(root), f"{sha256[:12]}__{original_name(claimed)}")


def write_reason(dest: Path, reason: Reason, message: str, **details: Any) -> Path:
    """The `<name>.reason.json` a person reads beside a quarantined file."""
    report = {
        "reason": reason.value,
        "description": DESCRIPTIONS[reason],
        "message": message,
        "quarantined_at": datetime.now(UTC).isoformat(),
        **details,
    }
    reason_path = dest.with_name(dest.name + ".reason.json")
    reason_path.parent.mkdir(parents=True, exist_ok=True)
    reason_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return reason_path
