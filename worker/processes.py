"""Child processes of the CLI and the benchmarks (workers, `run`), stopped the way Celery expects."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable

from worker import metrics

log = logging.getLogger(__name__)


def stop_gracefully(process: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM is Celery's warm shutdown: the tasks it holds finish and commit; SIGKILL only after `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def all_at_once(calls: list[Callable[[], object]]) -> None:
    """Run each call in its own thread and wait for all: stopping processes one after another would add their
    warm shutdowns up."""
    threads = [threading.Thread(target=call, daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class Supervised:
    """A child process that is started again, with a logged reason, whenever it exits without being asked to.

    `ecg-intake run` keeps its inference worker this way: a crash there must not leave decoded pages
    waiting for a classifier that is gone.
    """

    def __init__(self, command: list[str], env: dict[str, str], name: str, check_every: float = 1.0,
                 stdout: int | None = None) -> None:
        self.command, self.env, self.name, self.stdout = command, env, name, stdout
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.process = subprocess.Popen(command, env=env, stdout=stdout)
        self._thread = threading.Thread(target=self._watch, args=(check_every,), name=f"supervise-{name}",
                                        daemon=True)
        self._thread.start()

    def _watch(self, check_every: float) -> None:
        while not self._stopping.wait(check_every):
            with self._lock:
                code = self.process.poll()
                if code is None or self._stopping.is_set():
                    continue
                self.restarts += 1
                metrics.process_gone(self.process.pid)
                log.error("%s process exited with code %s; starting it again (restart %d)", self.name, code,
                          self.restarts)
                self.process = subprocess.Popen(self.command, env=self.env, stdout=self.stdout)

    def stopping(self) -> None:
        """The parent is shutting down: no more restarts, and the child starts its warm shutdown now, alongside
        the parent's, rather than after it. Safe to call from a signal handler (it takes no lock)."""
        self._stopping.set()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60) -> None:
        self._stopping.set()
        with self._lock:
            stop_gracefully(self.process, timeout)


def follow_parent(check_every: float = 1.0) -> threading.Thread:
    """A supervised child stops (SIGTERM to itself: Celery's warm shutdown) once its parent is gone, so a parent
    killed before it could stop the child leaves no orphan worker behind."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(check_every)
        log.warning("parent process %d is gone; shutting down", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="follow-parent", daemon=True)
    thread.start()
    return thread
