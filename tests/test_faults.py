"""Fault injection on the production parts: SIGKILLed workers, a Redis outage, a PostgreSQL outage, a full disk.

Real servers, a real watcher and real worker processes, real files. Every test ends with the same audit:
each dropped file is in the archive or the quarantine exactly once and intact, the database holds one
document per file, one prediction per page and nothing half-written, and the inbox and its claim area are
empty. The watcher and workers of a test are never restarted by the test except where it killed them.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import random
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from ingest.files import original_name
from model_training.synth.paper import render_page
from model_training.synth.signals import generate_record
from tests.helpers.cli import Cli
from tests.helpers.processes import kill_tree
from tests.helpers.servers import PostgresServer, RedisServer
from worker.db.models import Document, DocumentStatus, Event, Page, Prediction
from worker.services import services_layout, start_services

pytestmark = pytest.mark.services


# ---- inputs ---------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _page():
    image, _ = render_page(generate_record(7), 7, "light", dpi=100)
    return image


def _scan(i: int) -> bytes:
    """A small page scan whose bytes are unique to `i`: a binary dot code in the bottom margin."""
    page = _page().copy()
    for bit in range(10):
        if i >> bit & 1:
            cv2.circle(page, (20 + 12 * bit, page.shape[0] - 15), 4, (0, 0, 0), -1)
    ok, buffer = cv2.imencode(".png", page)
    assert ok
    return buffer.tobytes()


def _batch(start: int, count: int, junk_every: int = 0) -> dict[str, bytes]:
    """`count` files named by number: page scans, and every `junk_every`-th one random bytes (unsupported_type)."""
    files = {}
    for i in range(start, start + count):
        if junk_every and i % junk_every == junk_every - 1:
            files[f"junk-{i:03d}.pdf"] = random.Random(i).randbytes(3000)
        else:
            files[f"scan-{i:03d}.png"] = _scan(i)
    return files


def _drop(inbox: Path, files: dict[str, bytes]) -> dict[str, str]:
    """Write each file under a temporary name and rename it in, as a scanner share does; returns name -> sha256."""
    inbox.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        part = inbox / f"{name}.part"
        part.write_bytes(data)
        part.rename(inbox / name)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


# ---- the processes --------------------------------------------------------------------------------------------

class Pipeline:
    """`ecg-intake watch` plus an ingest and an infer worker, each its own process, as deployed."""

    def __init__(self, cli: Cli, inbox: Path, logs: Path) -> None:
        self.services = start_services(services_layout(inbox, infer_concurrency=4), cli.env, logs,
                                       cli=cli.command(), cwd=cli.cwd)
        self.generation = len(self.services.processes) - 1  # worker starts; the watcher is never restarted

    def start(self, kind: str) -> None:
        """A replacement for the worker `kind` (after `kill`)."""
        self.generation += 1
        self.services.restart(kind)

    def kill(self, kind: str) -> None:
        """SIGKILL the worker and its decoder child: nothing gets to clean up or acknowledge."""
        kill_tree(self.services[kind])

    def alive(self) -> bool:
        return self.services.alive()

    def logs_text(self) -> str:
        return "\n".join(log.read_text(errors="replace") for log in self.services.logs.values())

    def tail(self) -> str:
        return self.services.tail()

    def stop(self) -> None:
        self.services.stop(timeout=30)


@contextlib.contextmanager
def _pipeline(cli: Cli, inbox: Path, logs: Path) -> Iterator[Pipeline]:
    pipeline = Pipeline(cli, inbox, logs)
    try:
        yield pipeline
    finally:
        pipeline.stop()


def _services(cli: Cli, database_url: str, broker_url: str) -> None:
    """Point the CLI at the servers; a 10 s visibility timeout makes Redis and the watcher re-offer quickly."""
    cli.env.update({"ECG_INTAKE_DATABASE_URL": database_url, "ECG_INTAKE_BROKER_URL": broker_url,
                    "ECG_INTAKE_VISIBILITY_TIMEOUT": "10", "ECG_INTAKE_REOFFER_SECONDS": "10",
                    "ECG_INTAKE_USE_FS_EVENTS": "false",
                    "COLUMNS": "400"})  # log lines unwrapped, so the tests can find the messages they expect
    cli("db", "upgrade")


# ---- the audit ------------------------------------------------------------------------------------------------

def _audit(url: str) -> dict:
    """What the database says, in numbers a reliability table can quote."""
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            count = session.scalar
            predicted = select(Prediction.page_id)
            return {
                "statuses": dict(session.execute(select(Document.status, func.count())
                                                 .group_by(Document.status)).all()),
                "reasons": dict(session.execute(select(Document.reason, func.count())
                                                .where(Document.status == DocumentStatus.QUARANTINED)
                                                .group_by(Document.reason)).all()),
                "documents": count(select(func.count()).select_from(Document)),
                "pages": count(select(func.count()).select_from(Page)),
                "predictions": count(select(func.count()).select_from(Prediction)),
                "predicted_pages": count(select(func.count(func.distinct(Prediction.page_id)))),
                # half-written: a document with pages of which one has no prediction
                "documents_missing_predictions": count(select(func.count(func.distinct(Page.document_id)))
                                                       .where(Page.id.not_in(predicted))),
                "duplicate_sightings": count(select(func.count()).select_from(Event)
                                             .where(Event.action == "duplicate_sighting")),
            }
    finally:
        engine.dispose()


def _final(url: str) -> int:
    return sum(n for status, n in _audit(url)["statuses"].items() if status in DocumentStatus.FINAL)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _settled(url: str, inbox: Path, dropped: dict[str, str]) -> bool:
    """Every dropped file has its outcome and has left the inbox and the claim area."""
    return _final(url) == len(dropped) and not _files(inbox)


def _wait(condition: Callable[[], bool], what: str, timeout: float, pipeline: Pipeline) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert pipeline.alive(), f"a process exited while waiting for {what}:\n{pipeline.tail()}"
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout:.0f}s\n{pipeline.tail()}"
        time.sleep(0.5)


def _check_every_file_once(url: str, home: Path, inbox: Path, dropped: dict[str, str]) -> dict:
    """The rule that holds after any fault: each file archived or quarantined exactly once, intact, and recorded
    once with one prediction per page; nothing half-written, nothing left behind, nothing else on disk."""
    good = {name for name in dropped if name.startswith("scan-")}
    bad = set(dropped) - good
    audit = _audit(url)
    assert audit["statuses"] == {DocumentStatus.DONE: len(good), **({DocumentStatus.QUARANTINED: len(bad)}
                                                                    if bad else {})}, audit
    assert audit["reasons"] == ({"unsupported_type": len(bad)} if bad else {}), audit
    assert audit["documents"] == len(dropped)
    assert audit["pages"] == audit["predictions"] == audit["predicted_pages"] == len(good), audit
    assert audit["documents_missing_predictions"] == 0 and audit["duplicate_sightings"] == 0, audit

    archived = _files(home / "archive")
    quarantined = [p for p in _files(home / "quarantine") if not p.name.endswith(".reason.json")]
    assert sorted(original_name(p) for p in archived) == sorted(good)  # a second copy would show twice
    assert sorted(original_name(p) for p in quarantined) == sorted(bad)
    for kept in archived + quarantined:
        sha256 = dropped[original_name(kept)]
        assert kept.name.startswith(sha256[:12]) and hashlib.sha256(kept.read_bytes()).hexdigest() == sha256
    assert all(p.with_name(p.name + ".reason.json").is_file() for p in quarantined)
    assert _files(inbox) == []  # the inbox and .claimed/
    assert [p for p in _files(home) if p.name.endswith(".part")] == []
    return audit


# ---- the faults -----------------------------------------------------------------------------------------------

@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A broker of this test's own: it is stopped mid-batch, and leftovers of other tests must not count."""
    server = RedisServer()
    yield server
    server.stop()


KILL_SEED = 20240611


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_workers_sigkilled_three_times_in_a_300_file_batch(cli: Cli, home: Path, tmp_path: Path,
                                                            redis: RedisServer, postgres_url: str) -> None:
    """Three SIGKILLs at seeded random points (ingest, infer or both); the replacements finish everything."""
    _services(cli, postgres_url, redis.url)
    inbox = tmp_path / "inbox"
    dropped = _drop(inbox, _batch(0, 300, junk_every=30))
    rng = random.Random(KILL_SEED)
    kills = [(at, rng.choice(["ingest", "infer", "both"]), rng.uniform(0.0, 2.0))
             for at in sorted(rng.sample(range(15, 240), 3))]
    started = time.monotonic()
    with _pipeline(cli, inbox, tmp_path / "logs") as pipeline:
        for at, victim, delay in kills:
            _wait(lambda at=at: _final(postgres_url) >= at, f"{at} documents final", 900, pipeline)
            time.sleep(delay)  # the random point: somewhere inside a decode, a forward pass, a commit or a move
            victims = ["ingest", "infer"] if victim == "both" else [victim]
            for kind in victims:
                pipeline.kill(kind)
            final = _final(postgres_url)
            assert final < len(dropped), f"the batch finished before kill at {at}; nothing was tested"
            print(f"killed {victim} at {final} final documents")
            for kind in victims:
                pipeline.start(kind)
        _wait(lambda: _settled(postgres_url, inbox, dropped), "every file settled after three kills", 1200, pipeline)
    audit = _check_every_file_once(postgres_url, home, inbox, dropped)
    print(f"sigkill: {len(dropped)} files, 3 kills {kills}, {time.monotonic() - started:.0f}s, {audit}")


@pytest.mark.slow  # minutes on 2 cores: CI runs it with `make test-slow`
def test_redis_down_for_30s_mid_batch_loses_nothing(cli: Cli, home: Path, tmp_path: Path, redis: RedisServer,
                                                    postgres_url: str) -> None:
    """The broker goes away with messages in it (no persistence: they are gone) and comes back on the same port.

    Nobody restarts the watcher or the workers: they reconnect, and claims whose message died with the broker
    are offered again by the watcher.
    """
    import redis as redis_client

    _services(cli, postgres_url, redis.url)
    inbox = tmp_path / "inbox"
    started = time.monotonic()
    with _pipeline(cli, inbox, tmp_path / "logs") as pipeline:
        dropped = _drop(inbox, _batch(0, 40, junk_every=20))
        _wait(lambda: _final(postgres_url) >= 8, "8 documents final", 300, pipeline)
        broker = redis_client.Redis(port=redis.port)
        queued = broker.llen("ingest") + broker.llen("infer")
        redis.halt()
        outage = time.monotonic()
        assert _final(postgres_url) < len(dropped) and queued > 0, "nothing was in flight when Redis stopped"
        dropped |= _drop(inbox, _batch(40, 20, junk_every=20))  # files keep arriving during the outage
        while time.monotonic() - outage < 30:
            assert pipeline.alive(), f"a process exited while Redis was down:\n{pipeline.tail()}"
            time.sleep(0.5)
        redis.start()
        dropped |= _drop(inbox, _batch(60, 10))
        _wait(lambda: _settled(postgres_url, inbox, dropped), "every file settled after the outage", 600, pipeline)
        assert pipeline.generation == 2  # the same two workers (and watcher) from start to end
    audit = _check_every_file_once(postgres_url, home, inbox, dropped)
    print(f"redis outage: {len(dropped)} files, {queued} messages lost with the broker, "
          f"{time.monotonic() - started:.0f}s, {audit}")


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A cluster of this test's own: halting the suite's shared one would fail other tests."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.mark.slow  # minutes on 2 cores: CI runs it with `make test-slow`
def test_postgres_down_mid_batch_retries_and_writes_nothing_half(cli: Cli, home: Path, tmp_path: Path,
                                                                redis: RedisServer, postgres: PostgresServer) -> None:
    """The database goes away mid-batch, every connection cut; tasks retry with backoff and finish after."""
    url = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    _services(cli, url, redis.url)
    inbox = tmp_path / "inbox"
    started = time.monotonic()
    with _pipeline(cli, inbox, tmp_path / "logs") as pipeline:
        dropped = _drop(inbox, _batch(0, 40, junk_every=20))
        _wait(lambda: _final(url) >= 8, "8 documents final", 300, pipeline)
        postgres.halt()
        outage = time.monotonic()
        dropped |= _drop(inbox, _batch(40, 10))
        while time.monotonic() - outage < 20:
            assert pipeline.alive(), f"a process exited while PostgreSQL was down:\n{pipeline.tail()}"
            time.sleep(0.5)
        waiting = len(_files(inbox / ".claimed"))  # their tasks met the outage (Celery logs retries at INFO only)
        postgres.start()
        at_restart = _final(url)
        assert at_restart < len(dropped) and waiting > 0, "the batch finished during the outage; nothing was tested"
        _wait(lambda: _settled(url, inbox, dropped), "every file settled after the outage", 600, pipeline)
        assert pipeline.generation == 2
        assert "database unreachable" in pipeline.logs_text()  # the worker said why its files waited
    audit = _check_every_file_once(url, home, inbox, dropped)
    stuck = {s: n for s, n in audit["statuses"].items() if s in (DocumentStatus.RECEIVED, DocumentStatus.DECODED)}
    assert stuck == {}
    print(f"postgres outage: {len(dropped)} files, {waiting} claimed during it, {at_restart} final at restart, "
          f"{time.monotonic() - started:.0f}s, {audit}")


@pytest.fixture
def small_disk(home: Path) -> Iterator[Path]:
    """The data directory on a 24 MiB tmpfs (needs root and mount); skipped where this machine cannot mount."""
    home.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(home)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs for the data directory: {mounted.stderr.strip()}")
    try:
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


def _fill(folder: Path) -> Path:
    """Write one file until the file system says ENOSPC; returns it (deleting it frees the space).

    Unbuffered: a buffered writer would keep the bytes the full disk refused and raise again when closed."""
    filler = folder / "filler.bin"
    chunk = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@pytest.mark.slow  # minutes on 2 cores: CI runs it with `make test-slow`
def test_full_data_disk_keeps_files_claimed_then_processes_them(cli: Cli, home: Path, tmp_path: Path,
                                                                 redis: RedisServer, postgres_url: str,
                                                                 small_disk: Path) -> None:
    """No space for pages, archive or quarantine: a clear error, nothing quarantined or deleted, every file still
    claimed; once space is freed, each is processed without anyone restarting anything."""
    _services(cli, postgres_url, redis.url)
    inbox = tmp_path / "inbox"  # another file system than the data directory, as a scanner share is
    with _pipeline(cli, inbox, tmp_path / "logs") as pipeline:
        dropped = _drop(inbox, _batch(100, 1))  # a first file through, so the workers are up before the disk fills
        _wait(lambda: _settled(postgres_url, inbox, dropped), "the first file settled", 300, pipeline)
        filler = _fill(small_disk)
        full = _drop(inbox, _batch(0, 8, junk_every=8))
        dropped |= full
        claimed = inbox / ".claimed"

        def all_refused() -> bool:
            return (len(_files(claimed)) == len(full)
                    and pipeline.logs_text().count("No space left on device") >= 2 * len(full))

        _wait(all_refused, "every file refused for lack of space, twice", 300, pipeline)
        assert _audit(postgres_url)["statuses"].get(DocumentStatus.DONE) == 1  # the first file only
        assert sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(claimed)) == \
            sorted(full.values())  # nothing deleted, nothing truncated
        assert len(_files(small_disk / "archive")) == 1 and _files(small_disk / "quarantine") == []
        assert "internal_error" not in pipeline.logs_text()

        filler.unlink()
        _wait(lambda: _settled(postgres_url, inbox, dropped), "every file settled once space was freed", 600,
              pipeline)
    audit = _check_every_file_once(postgres_url, home, inbox, dropped)
    print(f"disk full: {len(dropped)} files, {audit}")
