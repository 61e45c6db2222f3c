"""The watcher: stability before claim, exactly-once claims under a race, temp files, crash recovery."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ingest.watch import CLAIM_DIR, Claim, Inbox, StabilityTracker, Watcher, claim

EVENT_CLAIM_WITHIN_S = 5.0  # an event-woken claim takes well under a second; far less than the 60 s poll


def _wait_for_the_observer(within_s: float = 10.0) -> None:
    """Until watchdog's inotify emitter runs (it adds its watches before its thread starts), not a guessed sleep."""
    from watchdog.observers.api import EventEmitter

    deadline = time.monotonic() + within_s
    while not any(isinstance(t, EventEmitter) and t.is_alive() for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the filesystem observer did not start"
        time.sleep(0.02)


def test_file_still_being_written_is_not_claimed_until_stable(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    claims: list[Claim] = []
    watcher = Watcher([Inbox(inbox)], claims.append, stable_seconds=0.6, poll_interval=0.1)
    growing = inbox / "scan.pdf"
    with open(growing, "wb") as handle:
        for _ in range(8):  # keeps growing for ~0.8 s, longer than the stability window
            handle.write(b"x" * 1000)
            handle.flush()
            watcher.scan()
            assert claims == []
            time.sleep(0.1)
    deadline = time.monotonic() + 5
    while not claims and time.monotonic() < deadline:
        watcher.scan()
        time.sleep(0.1)
    assert len(claims) == 1
    assert claims[0].claimed.read_bytes() == b"x" * 8000
    assert claims[0].original == growing
    assert not growing.exists()


def test_stability_tracker_resets_on_change(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a")
    tracker = StabilityTracker(stable_seconds=10)
    assert not tracker.is_stable(path, now=0)
    assert not tracker.is_stable(path, now=5)
    assert tracker.is_stable(path, now=10)
    path.write_bytes(b"ab")
    assert not tracker.is_stable(path, now=11)
    assert not tracker.is_stable(path, now=20)
    assert tracker.is_stable(path, now=21)


def test_temporary_and_hidden_files_are_left_alone(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("upload.pdf.part", "x.tmp", "~$report.pdf", ".hidden.png", "file.crdownload"):
        (inbox / name).write_bytes(b"data")
    (inbox / "batch-7").mkdir()
    (inbox / "batch-7" / "real.png").write_bytes(b"data")
    claims: list[Claim] = []
    Watcher([Inbox(inbox)], claims.append, stable_seconds=0, poll_interval=0.05).run_once()
    assert [c.original.name for c in claims] == ["real.png"]
    assert claims[0].claimed.parent == inbox / CLAIM_DIR / "batch-7"


def test_two_watchers_never_claim_the_same_file(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox")
    inbox.path.mkdir()
    files = [inbox.path / f"f{i:03d}.png" for i in range(200)]
    for path in files:
        path.write_bytes(path.name.encode())
    won: list[list[Claim]] = [[], []]
    barrier = threading.Barrier(2)

    def race(index: int) -> None:
        barrier.wait()
        for path in files:
            taken = claim(path, inbox)
            if taken is not None:
                won[index].append(taken)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    originals = [c.original for c in won[0] + won[1]]
    assert sorted(originals) == sorted(files)  # every file exactly once
    assert {c.claimed.read_bytes() for c in won[0] + won[1]} == {p.name.encode() for p in files}


def test_claims_left_by_a_dead_process_are_offered_again(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox", source="ward-3")
    (inbox.path / "sub").mkdir(parents=True)
    (inbox.path / "sub" / "a.pdf").write_bytes(b"%PDF-")
    first = claim(inbox.path / "sub" / "a.pdf", inbox)
    assert first is not None
    offered: list[Claim] = []
    Watcher([inbox], offered.append, stable_seconds=0).run_once()
    assert offered == [Claim(claimed=first.claimed, original=inbox.path / "sub" / "a.pdf", source="ward-3")]


def test_files_from_downtime_and_new_arrivals_are_both_claimed(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "batch").mkdir(parents=True)
    (inbox / "batch" / "dropped-while-down.pdf").write_bytes(b"%PDF-1")
    claims: list[Claim] = []
    # Events must wake it: the next poll is a minute away, the new file must be claimed within seconds.
    watcher = Watcher([Inbox(inbox)], claims.append, stable_seconds=0.2, poll_interval=60.0, use_events=True)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 10  # the first scan claims what was there: no event needed
        while len(claims) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(claims) == 1, "the file from the downtime was not claimed by the first scan"
        (inbox / "arrived-later.pdf").write_bytes(b"%PDF-2")
        deadline = time.monotonic() + EVENT_CLAIM_WITHIN_S
        while len(claims) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        watcher.wake()
        thread.join(timeout=10)
    assert sorted(c.original.name for c in claims) == ["arrived-later.pdf", "dropped-while-down.pdf"]


def test_symlinks_are_never_claimed_wherever_they_point(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    secret = tmp_path / "elsewhere" / "passwd.pdf"
    secret.parent.mkdir()
    secret.write_bytes(b"%PDF-")
    (inbox / "link.pdf").symlink_to(secret)
    (inbox / "real.pdf").write_bytes(b"%PDF-")
    (inbox / "inside-link.pdf").symlink_to(inbox / "real.pdf")
    claims: list[Claim] = []
    Watcher([Inbox(inbox)], claims.append, stable_seconds=0).run_once()
    assert [c.original.name for c in claims] == ["real.pdf"]
    assert secret.exists() and (inbox / "link.pdf").is_symlink() and (inbox / "inside-link.pdf").is_symlink()


MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
server:/export/ecg /mnt/ecg nfs4 rw,relatime 0 0
//filer/scans /mnt/scans cifs rw 0 0
/dev/sdb1 /mnt/ecg/local ext4 rw 0 0
"""


def test_network_shares_are_polled_and_local_disks_use_events(tmp_path: Path) -> None:
    from ingest.watch import events_arrive, filesystem_type

    assert filesystem_type(Path("/mnt/ecg/ward-3"), MOUNTS) == "nfs4"
    assert filesystem_type(Path("/mnt/ecg/local/in"), MOUNTS) == "ext4"  # the deepest mount point wins
    assert filesystem_type(Path("/mnt/scans"), MOUNTS) == "cifs"
    assert filesystem_type(Path("/mnt/scansXYZ"), MOUNTS) == "ext4"  # a prefix of a name is not a parent
    assert events_arrive(Path("/mnt/ecg/ward-3"), MOUNTS)[0] is False
    assert "network" in events_arrive(Path("/mnt/scans/in"), MOUNTS)[1]
    assert events_arrive(tmp_path)[0] is True  # the real /proc/mounts of this machine


def test_inbox_settings_name_their_source() -> None:
    from worker.settings import InboxSetting, Settings

    settings = Settings(inboxes=["/in/plain", "cardiology=/in/b", {"path": "/in/c", "source": "er"}])
    assert [(i.path, i.source_name) for i in settings.inboxes] == [
        (Path("/in/plain"), "plain"), (Path("/in/b"), "cardiology"), (Path("/in/c"), "er")]
    assert InboxSetting.model_validate("/odd=name/folder").source_name == "folder"  # a path with '=' stays a path


def test_a_file_reported_finished_needs_only_the_short_settle_window(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(b"x" * 100)
    tracker = StabilityTracker(stable_seconds=10, settled_seconds=0.25)
    tracker.finished_writing(path)
    assert not tracker.is_stable(path, now=0)
    assert tracker.is_stable(path, now=0.3)
    tracker.forget(path)
    assert not tracker.is_stable(path, now=1) and not tracker.is_stable(path, now=2)  # no event: the full window


def test_a_copied_file_is_claimed_on_its_close_event_well_before_the_stable_window(tmp_path: Path) -> None:
    inbox = Inbox(path=tmp_path / "inbox", source="ward")
    claims: list[Claim] = []
    watcher = Watcher([inbox], claims.append, stable_seconds=30, poll_interval=0.2, use_events=True)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        _wait_for_the_observer()
        (inbox.path / "scan.png").write_bytes(b"\x89PNG" + b"x" * 100)  # open, write, close: as a copy does
        deadline = time.monotonic() + 10
        while not claims and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert [c.original.name for c in claims] == ["scan.png"]  # in seconds, not the 30 s window
