"""Hashing and the final moves of an original file: to the archive or to the quarantine."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Iterator
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


NAME_MAX = 255  # bytes in one file name on every file system ecg-intake writes to
# `<sha12>__` before; `.reason.json`, a `_unique` counter and the `.<name>.<thread id>.part` of `write_atomic` and
# `_copy_across` after: what a kept name must leave room for
_DESTINATION_ROOM = 14 + len(".reason.json") + 8 + len("." + ".4194304.part")


def fit_name(name: str, max_bytes: int) -> str:
    """`name` cut to `max_bytes` of UTF-8 (whole characters, extension kept), so a dropped name of 255 bytes
    still fits after the claim prefix or the archive's sha prefix is added."""
    if len(os.fsencode(name)) <= max_bytes:
        return name
    stem, suffix = os.path.splitext(name)
    if len(os.fsencode(suffix)) > max_bytes // 2:
        stem, suffix = name, ""
    room = max_bytes - len(os.fsencode(suffix))
    while stem and len(os.fsencode(stem)) > room:
        stem = stem[:-1]
    return stem + suffix


def printable(name: str) -> str:
    """`name` with bytes that are not UTF-8 (Linux allows any) written as `\\xff`: such a name cannot be
    stored in the database, so the claim, archive and quarantine names use this form instead."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _unique(folder: Path, name: str) -> Path:
    """A path in `folder` that does not exist yet: nothing is ever overwritten."""
    candidate = folder / name
    stem, suffix = os.path.splitext(name)
    counter = 1
    while candidate.exists():
        candidate = folder / f"{stem}.{counter}{suffix}"
        counter += 1
    return candidate


def _part_name(path: Path) -> Path:
    """A hidden name beside `path` no other writer uses: the thread's id, unique on the machine as a pid is
    (threads of one process write pages side by side)."""
    return path.with_name(f".{path.name}.{threading.get_native_id()}.part")


def _copy_across(src: Path, dest: Path) -> Path:
    """Copy to a hidden part file, flush, then link it to a free name: `dest` only ever holds a whole copy.

    A full disk or a crash mid-copy leaves at most the part file (removed on error), never a truncated
    original under the name the database records (which would later pass for an earlier, finished move).
    """
    part = _part_name(dest)
    try:
        shutil.copy2(src, part)
        with open(part, "rb") as handle:
            os.fsync(handle.fileno())
        while True:
            try:
                os.link(part, dest)  # unlike rename, never replaces a file that appeared meanwhile
                break
            except FileExistsError:
                dest = _unique(dest.parent, dest.name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    src.unlink()
    return dest


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
        return _copy_across(src, dest)  # another file system
    return dest


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` under a temporary name, then rename: `path` is either absent, old or whole."""
    part = _part_name(path)
    try:
        part.write_bytes(data)
        os.replace(part, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()


@contextlib.contextmanager
def claim_lock(path: Path) -> Iterator[bool]:
    """Hold an advisory lock on `path` while the block runs; yields False when another process holds it.

    Two deliveries of the same claim (a broker redelivery, a re-offered claim) must not decode and move
    one file at the same time. The kernel drops the lock when its holder dies, even by SIGKILL.
    A file system without locks (some network shares) yields True: the processing stays idempotent.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, after the block
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        except OSError:
            pass  # no lock support here
        yield True
    finally:
        handle.close()


def destination(root: Path, sha256: str, claimed: Path) -> Path:
    """Where an original goes in the archive or quarantine: `<root>/<date>/<sha12>__<name>`.

    Planned before the move, so the database records the place first and a crash in between
    leaves a record that says exactly where the file must still go.
    """
    name = fit_name(original_name(claimed), NAME_MAX - _DESTINATION_ROOM)
    return _unique(_dated_dir(root), f"{sha256[:12]}__{name}")


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
    write_atomic(reason_path, (json.dumps(report, indent=2, default=str) + "\n").encode())  # never half a report
    return reason_path
