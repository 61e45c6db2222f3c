"""Two deliveries of one claim never process it twice, and a claim without an outcome is offered again.

A broker redelivery and the watcher's re-offer both hand a worker a claim another run may hold right now;
`ingest.files.claim_lock` keeps them apart. These run the real intake on real files, in the test's process.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ingest.decode.isolated import Decoder
from ingest.watch import Claim, Inbox, Watcher
from tests.helpers.intake import drop_and_claim, ecg_pdf, ecg_png, intake_settings, stored
from worker.intake import IntakeResult, intake


def test_two_concurrent_deliveries_of_one_claim_decode_and_record_it_once(tmp_path: Path, home: Path,
                                                                           bundle_dir: Path) -> None:
    settings = intake_settings(home, bundle_dir)
    # three pages at 200 DPI: seconds of decoding, so the second delivery arrives while the first holds the claim
    taken = drop_and_claim(ecg_pdf(tmp_path / "src" / "three.pdf", [31, 32, 33]), tmp_path / "inbox")
    results: list[IntakeResult | BaseException | None] = [None, None]
    barrier = threading.Barrier(2)

    def deliver(index: int) -> None:
        decoder = Decoder(settings.decode_limits(), isolated=False)  # one per worker thread, as the tasks keep
        barrier.wait()
        try:
            results[index] = intake(settings, taken, decoder)
        except BaseException as exc:  # kept for the assertion below, not lost in the thread
            results[index] = exc

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sum(r is None for r in results) == 1, results
    (winner,) = [r for r in results if r is not None]
    assert isinstance(winner, IntakeResult) and winner.status == "decoded" and winner.classify
    rows = stored(settings.sqlalchemy_url)
    assert rows["documents"] == [(winner.sha256, "decoded", None)]
    assert sorted(page[1] for page in rows["pages"]) == [1, 2, 3]
    assert rows["events"].count("decoded") == 1 and "duplicate_sighting" not in rows["events"]
    assert taken.claimed.exists()  # still claimed, waiting for classification; nothing moved or duplicated
    assert not (home / "archive").exists() or not any((home / "archive").rglob("*.pdf"))


def test_a_claim_without_an_outcome_is_offered_again_after_the_reoffer_interval(tmp_path: Path, home: Path,
                                                                                 bundle_dir: Path) -> None:
    """The first message is lost (as with a broker restarted without persistence); the watcher offers the
    claim again after `reoffer_after` (settings.reoffer_seconds), then after twice as long, and stops once
    the claim has an outcome. The re-offer is processed by the real intake."""
    settings = intake_settings(home, bundle_dir)
    inbox = tmp_path / "inbox"
    ecg_png(inbox / "scan.png", 41)
    offers: list[tuple[float, Claim]] = []
    decoded: list[IntakeResult | None] = []
    decoder = Decoder(settings.decode_limits(), isolated=False)

    def on_claim(found: Claim) -> None:
        offers.append((time.monotonic(), found))
        if len(offers) == 2:  # the first message was lost; the re-offer reaches a worker
            decoded.append(intake(settings, found, decoder))

    reoffer = 0.6
    watcher = Watcher([Inbox(inbox)], on_claim, stable_seconds=0.1, poll_interval=0.05, use_events=False,
                      reoffer_after=reoffer)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(offers) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(offers) >= 3, offers
        claimed = offers[0][1].claimed
        assert [c.claimed for _, c in offers[:3]] == [claimed] * 3  # the same claim, never a new one
        first_wait, second_wait = offers[1][0] - offers[0][0], offers[2][0] - offers[1][0]
        assert reoffer <= first_wait < reoffer + 1.0, first_wait
        assert 2 * reoffer <= second_wait < 2 * reoffer + 1.0, second_wait  # then twice as long
        assert decoded and decoded[0] is not None and decoded[0].status == "decoded"
        # the outcome: the file leaves the claim area (as classification's archive move does); no more offers
        claimed.rename(tmp_path / "archived.png")
        count = len(offers)
        time.sleep(4 * reoffer + 0.5)
        assert len(offers) == count
    finally:
        stop.set()
        thread.join(timeout=10)
    rows = stored(settings.sqlalchemy_url)
    assert len(rows["documents"]) == 1 and len(rows["pages"]) == 1
