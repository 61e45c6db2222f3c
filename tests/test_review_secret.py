"""The review app's generated session key: processes that start together on one home agree on one whole key."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

from worker.review.auth import session_secret
from worker.settings import Settings


def _secret(home: str, start: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue) -> None:
    start.wait()
    results.put(session_secret(Settings(home=Path(home))))


def test_processes_starting_at_once_agree_on_one_whole_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(6), context.Queue()
    processes = [context.Process(target=_secret, args=(str(tmp_path), start, results)) for _ in range(6)]
    for process in processes:
        process.start()
    keys = [results.get(timeout=30) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert len(set(keys)) == 1 and len(keys[0]) >= 60
    key_file = tmp_path / "review-secret"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["review-secret"]  # no draft left behind
    assert session_secret(Settings(home=tmp_path)) == keys[0]  # a restart reads the same key
