"""The watcher: stability before claim, exactly-once claims under a race, temp files, crash recovery."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ingest.watch import CLAIM_DIR, Claim, Inbox, StabilityTracker, Watcher, claim


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
