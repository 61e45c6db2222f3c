"""Watch inbox folders, wait until each new file is complete, and claim it by an atomic rename.

A file is claimed by renaming it into `<inbox>/.claimed/`; `os.rename` within one file system is
atomic, so when two watchers race for the same file exactly one rename succeeds. Files that are
still in `.claimed/` when a watcher starts were claimed by a process that died before finishing;
`recover` offers them again (the processing side is idempotent on the file's sha256).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ingest.correlation import working_on
from ingest.files import NAME_MAX, fit_name, original_name, printable

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


_LINKS_REPORTED: set[Path] = set()  # each skipped link is logged once per process, not on every scan


def _skip(path: Path, inbox: Inbox, what: str = "link") -> None:
    """Symbolic links are never claimed, followed or moved: a link can point anywhere (/etc/passwd, another
    patient's folder), and moving it would carry a dangling pointer into the archive. Nor are FIFOs, sockets
    or devices (reading a FIFO blocks forever). They stay where they are; the log names the inbox, not the
    entry (names can carry patient identifiers)."""
    if path in _LINKS_REPORTED:
        return
    if len(_LINKS_REPORTED) > 10_000:
        _LINKS_REPORTED.clear()
    _LINKS_REPORTED.add(path)
    find = "-type l" if what == "link" else "! -type f ! -type d ! -type l"
    log.warning("inbox %s: skipping a %s; ecg-intake claims only regular files and never follows links, copy or "
                "move the file itself in (`find %s %s` lists them)", inbox.source,
                "symbolic link" if what == "link" else "special file", inbox.path, find)


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
    for root, dirs, files in os.walk(inbox.path):  # never descends into a linked folder (followlinks=False)
        for name in dirs:
            if not name.startswith(".") and (Path(root) / name).is_symlink():
                _skip(Path(root) / name, inbox)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (Path(root) / d).is_symlink())
        for name in sorted(files):
            path = Path(root) / name
            if is_temporary(name):
                continue
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(mode):
                _skip(path, inbox)
            elif not stat.S_ISREG(mode):
                _skip(path, inbox, "special")
            else:
                yield path


def claim(path: Path, inbox: Inbox) -> Claim | None:
    """Atomically move `path` into the claim area; None when another process took it first."""
    relative_parent = Path(*(printable(part) for part in path.parent.relative_to(inbox.path).parts))
    target_dir = inbox.path / CLAIM_DIR / relative_parent
    target_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{time.time_ns():x}-{os.getpid()}__"
    target = target_dir / (prefix + fit_name(printable(path.name), NAME_MAX - len(prefix)))  # 255 bytes still fit
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    return Claim(claimed=target, original=Path(printable(str(path))), source=inbox.source)


def recover(inbox: Inbox) -> list[Claim]:
    """Claims left behind by a process that stopped before the file reached archive or quarantine."""
    claim_root = inbox.path / CLAIM_DIR
    found = []
    for root, _dirs, files in os.walk(claim_root):
        for name in sorted(files):
            claimed = Path(root) / name
            if claimed.is_symlink():  # never made by `claim`; not followed
                continue
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


REOFFER_AFTER = 600.0  # seconds a claim may go without an outcome before it is offered again (then doubling)
QUEUE_RETRY = 5.0  # seconds between tries while the queue cannot be reached


class Watcher:
    """Finds complete files in a set of inboxes and hands each claim to `on_claim` exactly once.

    Once a claim is handed over, its message can still be lost: a broker restarted without persistence
    drops what it held, and a task that failed while the broker was down cannot queue its retry. So while
    running, a claim still in `.claimed/` `reoffer_after` seconds after its offer is offered again, then
    after twice as long, and so on (the processing side is idempotent and locks the claim). A claim
    `on_claim` cannot deliver (the queue unreachable) stays claimed and is tried again every few seconds;
    meanwhile no new file is claimed, so new files wait in the inbox. `on_new` hears of each file once, when it is
    claimed, however often its claim is offered.
    """

    def __init__(
        self,
        inboxes: list[Inbox],
        on_claim: Callable[[Claim], None],
        stable_seconds: float = 2.0,
        poll_interval: float = 1.0,
        use_events: bool = True,
        reoffer_after: float | None = REOFFER_AFTER,
        on_new: Callable[[Claim], None] | None = None,
    ) -> None:
        self.inboxes = inboxes
        self.on_claim = on_claim
        self.on_new = on_new
        self.poll_interval = poll_interval
        self.use_events = use_events
        self.reoffer_after = reoffer_after
        self.tracker = StabilityTracker(stable_seconds)
        self._wake = threading.Event()
        self._offers: dict[Path, tuple[float, float]] = {}  # claim -> (next offer due, monotonic; wait after it)
        self._unqueued: set[Path] = set()  # claims whose last offer failed
        self._queue_down_until = 0.0
        self._next_sweep = 0.0
        for inbox in inboxes:
            inbox.path.mkdir(parents=True, exist_ok=True)

    @property
    def unqueued(self) -> int:
        """Claims whose message could not be sent; they stay in `.claimed/` for the next try or start."""
        return len(self._unqueued)

    def _queue_down(self) -> bool:
        return time.monotonic() < self._queue_down_until

    def _offer(self, found: Claim) -> bool:
        """Hand `found` to `on_claim`; False when that failed (the claim stays and is tried again)."""
        now = time.monotonic()
        with working_on(claim_id(found.claimed)):
            try:
                self.on_claim(found)
            except Exception as exc:  # the queue is unreachable: nothing is lost, the file stays claimed
                self._queue_down_until = now + QUEUE_RETRY
                self._unqueued.add(found.claimed)
                self._offers[found.claimed] = (now + QUEUE_RETRY, self._offers.get(found.claimed, (0.0, 0.0))[1])
                log.warning("claim %s stays claimed: cannot queue it (%s: %s); trying again in %.0fs",
                            claim_id(found.claimed), type(exc).__name__, str(exc)[:200], QUEUE_RETRY)
                return False
            log.debug("claim %s from inbox %s queued", claim_id(found.claimed), found.source)
        self._unqueued.discard(found.claimed)
        if self.reoffer_after is not None:
            previous = self._offers.get(found.claimed, (0.0, 0.0))[1]
            wait = min(previous * 2, self.reoffer_after * 16) if previous else self.reoffer_after
            self._offers[found.claimed] = (now + wait, wait)
        return True

    def recover(self) -> list[Claim]:
        """Offer every claim left in `.claimed/` (by an earlier run); returns those that were queued."""
        claims = [c for inbox in self.inboxes for c in recover(inbox)]
        offered = []
        for found in claims:
            if self._queue_down():
                self._unqueued.add(found.claimed)
                self._offers[found.claimed] = (self._queue_down_until, 0.0)
                continue
            log.info("re-offering claim %s left by an earlier run", claim_id(found.claimed))
            if self._offer(found):
                offered.append(found)
        return offered

    def reoffer_stale(self) -> list[Claim]:
        """Offer again the claims due for it: failed offers, and claims with no outcome after their wait."""
        now = time.monotonic()
        found = [c for inbox in self.inboxes for c in recover(inbox)]
        present = {c.claimed for c in found}
        for gone in set(self._offers) - present:
            del self._offers[gone]
        self._unqueued &= present
        offered = []
        for stale in found:
            due = self._offers.get(stale.claimed)
            if due is None:  # another watcher's claim: its own watcher offers it; wait as if offered now
                if self.reoffer_after is not None:
                    self._offers[stale.claimed] = (now + self.reoffer_after, self.reoffer_after / 2)
                continue
            if now < due[0]:
                continue
            if stale.claimed not in self._unqueued:
                log.info("re-offering claim %s: no outcome %.0fs after it was queued", claim_id(stale.claimed),
                         due[1])
            if not self._offer(stale):
                break  # the queue is down: the rest wait for the next sweep
            offered.append(stale)
        return offered

    def scan(self) -> list[Claim]:
        """One pass over every inbox: claim what is stable, remember what is not yet; nothing while the queue
        is unreachable (the files wait in the inbox)."""
        claims: list[Claim] = []
        if self._queue_down():
            return claims
        present: set[Path] = set()
        for inbox in self.inboxes:
            for path in candidates(inbox):
                present.add(path)
                if self._queue_down() or not self.tracker.is_stable(path):
                    continue
                self.tracker.forget(path)
                taken = claim(path, inbox)
                if taken is None:
                    continue
                if self.on_new is not None:
                    self.on_new(taken)
                if self._offer(taken):
                    claims.append(taken)
        for gone in set(self.tracker._seen) - present:
            self.tracker.forget(gone)
        return claims

    def run_once(self) -> list[Claim]:
        """Recover, then claim everything present, waiting for files that are still being written.

        Returns the claims that were queued; stops early when the queue cannot be reached (`unqueued` says how
        many claims wait for the next start).
        """
        claims = self.recover()
        claims += self.scan()
        while self.tracker.pending() and not self._unqueued:
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
                if time.monotonic() >= self._next_sweep and (self.reoffer_after is not None or self._unqueued):
                    self.reoffer_stale()
                    self._next_sweep = time.monotonic() + min(QUEUE_RETRY, (self.reoffer_after or 60) / 2)
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
