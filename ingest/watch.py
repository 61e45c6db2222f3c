"""Watch inbox folders, wait until each new file is complete, and claim it by an atomic rename.

A file is claimed by renaming it into `<inbox>/.claimed/`; `os.rename` within one file system is
atomic, so when two watchers race for the same file exactly one rename succeeds. Files that are
still in `.claimed/` when a watcher starts were claimed by a process that died before finishing;
`recover` offers them again (the processing side is idempotent on the file's sha256).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ingest.files import original_name

log = logging.getLogger(__name__)

CLAIM_DIR = ".claimed"
TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".swp")
TEMP_PREFIXES = (".", "~$")
# inotify on a client sees only changes made by that client, never those other machines write to the share.
NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre", "gpfs",
                       "fuse.sshfs", "fuse.glusterfs", "fuse.davfs2", "davfs", "fuse.rclone", "fuse.s3fs"}


@dataclass(frozen=True)
class Inbox:
    path: Path
    source: str = "default"


@dataclass(frozen=True)
class Claim:
    """A file this process owns: `claimed` is where it lies now, `original` where it was dropped."""

    claimed: Path
    original: Path
    source: str

    def to_message(self) -> dict[str, str]:
        """The claim as one JSON object: what the watcher sends and a worker receives."""
        return {"claimed": str(self.claimed), "original": str(self.original), "source": self.source}

    @classmethod
    def from_message(cls, message: dict[str, str]) -> Claim:
        return cls(Path(message["claimed"]), Path(message["original"]), message["source"])


def claim_id(claimed: Path) -> str:
    """The claim's own token, safe to log: file names can carry patient identifiers."""
    return claimed.name.split("__", 1)[0]


def is_temporary(name: str) -> bool:
    return name.startswith(TEMP_PREFIXES) or name.lower().endswith(TEMP_SUFFIXES)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def filesystem_type(path: Path, mounts: str | None = None) -> str:
    """The type of the file system holding `path`, from /proc/mounts (`mounts` overrides it for tests)."""
    if mounts is None:
        proc = Path("/proc/mounts")
        mounts = proc.read_text() if proc.exists() else ""
    target = str(path.resolve())
    best_point, best_type = "", "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best_point):
            best_point, best_type = point, fields[2]
    return best_type


def events_arrive(path: Path, mounts: str | None = None) -> tuple[bool, str]:
    """Whether filesystem events can announce new files in `path`, and why not."""
    fs_type = filesystem_type(path, mounts)
    if fs_type in NETWORK_FILESYSTEMS:
        return False, f"{fs_type} is a network file system; events miss files written by other machines"
    return True, fs_type


def candidates(inbox: Inbox) -> Iterator[Path]:
    """Files in the inbox (sub-folders included) that may be ECG documents."""
    for root, dirs, files in os.walk(inbox.path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if is_temporary(name):
                continue
            if path.is_symlink() and not _inside(path, inbox.path):
                log.warning("refusing a symlink that points outside inbox %s", inbox.source)
                continue
            yield path


def claim(path: Path, inbox: Inbox) -> Claim | None:
    """Atomically move `path` into the claim area; None when another process took it first."""
    relative_parent = path.parent.relative_to(inbox.path)
    target_dir = inbox.path / CLAIM_DIR / relative_parent
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{time.time_ns():x}-{os.getpid()}__{path.name}"
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    return Claim(claimed=target, original=path, source=inbox.source)


def recover(inbox: Inbox) -> list[Claim]:
    """Claims left behind by a process that stopped before the file reached archive or quarantine."""
    claim_root = inbox.path / CLAIM_DIR
    found = []
    for root, _dirs, files in os.walk(claim_root):
        for name in sorted(files):
            claimed = Path(root) / name
            original = inbox.path / claimed.parent.relative_to(claim_root) / original_name(claimed)
            found.append(Claim(claimed=claimed, original=original, source=inbox.source))
    return found


class StabilityTracker:
    """Says a file is complete once its size and mtime have not changed for `stable_seconds`.

    A file the kernel reports as closed after writing (inotify's close_write) only has to hold still for
    `settled_seconds`: its writer is done, and waiting the full window would only add latency. Polled
    inboxes and files renamed in (watchdog reports those as created) wait the full window.
    """

    def __init__(self, stable_seconds: float, settled_seconds: float = 0.25) -> None:
        self.stable_seconds = stable_seconds
        self.settled_seconds = min(settled_seconds, stable_seconds)
        self._seen: dict[Path, tuple[int, int, float]] = {}
        self._finished: set[Path] = set()

    def finished_writing(self, path: Path) -> None:
        """A close-after-write event for `path` (filesystem events only, never from polling)."""
        self._finished.add(path)

    def is_stable(self, path: Path, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        try:
            stat = path.stat()
        except FileNotFoundError:
            self._seen.pop(path, None)
            return False
        signature = (stat.st_size, stat.st_mtime_ns)
        previous = self._seen.get(path)
        if previous is None or previous[:2] != signature:
            self._seen[path] = (*signature, now)
            return False
        window = self.settled_seconds if path in self._finished else self.stable_seconds
        return now - previous[2] >= window

    def forget(self, path: Path) -> None:
        self._seen.pop(path, None)
        self._finished.discard(path)

    def pending(self) -> int:
        return len(self._seen)

    def shortest_window(self) -> float:
        """The settle window of the soonest-ready pending file, so the watcher looks again in time."""
        finished = any(path in self._finished for path in self._seen)
        return self.settled_seconds if finished else self.stable_seconds


class Watcher:
    """Finds complete files in a set of inboxes and hands each claim to `on_claim` exactly once."""

    def __init__(
        self,
        inboxes: list[Inbox],
        on_claim: Callable[[Claim], None],
        stable_seconds: float = 2.0,
        poll_interval: float = 1.0,
        use_events: bool = True,
    ) -> None:
        self.inboxes = inboxes
        self.on_claim = on_claim
        self.poll_interval = poll_interval
        self.use_events = use_events
        self.tracker = StabilityTracker(stable_seconds)
        self._wake = threading.Event()
        for inbox in inboxes:
            inbox.path.mkdir(parents=True, exist_ok=True)

    def recover(self) -> list[Claim]:
        claims = [c for inbox in self.inboxes for c in recover(inbox)]
        for found in claims:
            log.info("re-offering claim %s left by an earlier run", claim_id(found.claimed))
            self.on_claim(found)
        return claims

    def scan(self) -> list[Claim]:
        """One pass over every inbox: claim what is stable, remember what is not yet."""
        claims = []
        present: set[Path] = set()
        for inbox in self.inboxes:
            for path in candidates(inbox):
                present.add(path)
                if not self.tracker.is_stable(path):
                    continue
                self.tracker.forget(path)
                taken = claim(path, inbox)
                if taken is None:
                    continue
                claims.append(taken)
                self.on_claim(taken)
        for gone in set(self.tracker._seen) - present:
            self.tracker.forget(gone)
        return claims

    def run_once(self) -> list[Claim]:
        """Recover, then claim everything present, waiting for files that are still being written."""
        claims = self.recover()
        claims += self.scan()
        while self.tracker.pending():
            time.sleep(self.poll_interval)
            claims += self.scan()
        return claims

    def run(self, stop: threading.Event) -> None:
        """Watch until `stop` is set; filesystem events only wake the loop early, polling is the truth."""
        observer = self._start_observer() if self.use_events else None
        try:
            self.recover()
            while not stop.is_set():
                self.scan()
                self._wake.wait(self._next_wait())
                self._wake.clear()
        finally:
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)

    def _next_wait(self) -> float:
        """A file waiting to settle is looked at again as soon as it could be stable, not a full poll later."""
        if self.tracker.pending():
            return min(self.poll_interval, max(0.05, self.tracker.shortest_window() / 2))
        return self.poll_interval

    def wake(self) -> None:
        self._wake.set()

    def _start_observer(self):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class _Wake(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                path = str(event.dest_path or event.src_path)
                if f"/{CLAIM_DIR}" in path:
                    return
                if not event.is_directory and event.event_type == "closed":
                    watcher.tracker.finished_writing(Path(path))
                watcher.wake()

        observer = Observer()
        try:
            for inbox in self.inboxes:
                arrive, why = events_arrive(inbox.path)
                if arrive:
                    observer.schedule(_Wake(), str(inbox.path), recursive=True)
                else:
                    log.info("inbox %s: polling every %.1fs (%s)", inbox.source, self.poll_interval, why)
            observer.start()
        except OSError as exc:
            log.warning("filesystem events unavailable (%s); polling every %.1fs", exc, self.poll_interval)
            return None
        return observer
