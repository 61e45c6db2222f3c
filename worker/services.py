"""The service's processes in one place: which `ecg-intake` processes make it up (watcher, workers, or the
embedded `run`), their queues, pool and concurrency, and starting and stopping them together.

`run`, the `worker` command, the benchmarks and the tests all lay the service out through this module, so
what they start is what the README tells a user to start.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from worker.processes import all_at_once, stop_gracefully

if TYPE_CHECKING:
    from celery.apps.worker import Worker

CLI = (sys.executable, "-m", "worker.cli")


@dataclass(frozen=True)
class WorkerSpec:
    """One Celery worker: the queues it consumes, its pool (`solo`, or `threads` for classify tasks that share
    micro-batches), how many tasks it runs at once, and whether it also sends the schedule (`beat`: one per
    installation)."""

    queues: tuple[str, ...] = ("ingest", "infer")
    pool: str = "solo"
    concurrency: int = 1
    beat: bool = False

    def args(self) -> list[str]:
        """The `ecg-intake worker` command line of this worker."""
        return ["worker", "--queues", ",".join(self.queues), "--pool", self.pool,
                "--concurrency", str(self.concurrency), *(["--beat"] if self.beat else [])]


@dataclass(frozen=True)
class Layout:
    """The processes of one service, by name: a `watch` process ("watch") over `inboxes` and one process per
    entry of `workers`; or, `embedded`, one `ecg-intake run` ("run") that watches and works alone."""

    inboxes: tuple[str, ...] = ()
    workers: Mapping[str, WorkerSpec] = field(default_factory=dict)
    embedded: bool = False

    def commands(self) -> dict[str, list[str]]:
        """Name -> `ecg-intake` arguments, workers first, so they consume before the first file is queued."""
        inboxes = [arg for inbox in self.inboxes for arg in ("--inbox", str(inbox))]
        if self.embedded:
            return {"run": ["run", *inboxes]}
        commands = {name: spec.args() for name, spec in self.workers.items()}
        if inboxes:
            commands["watch"] = ["watch", *inboxes]
        return commands


def split_workers(infer_concurrency: int = 4, ingest_workers: int = 1) -> dict[str, WorkerSpec]:
    """The production split: decoding in `ingest_workers` processes, classification in threads that share
    micro-batches."""
    ingest = {f"ingest-{n}" if n > 1 else "ingest": WorkerSpec(("ingest",)) for n in range(1, ingest_workers + 1)}
    return {**ingest, "infer": WorkerSpec(("infer",), "threads", infer_concurrency)}


def services_layout(inbox: str | Path, infer_concurrency: int = 4, ingest_workers: int = 1) -> Layout:
    """`watch` plus the production split of workers, as the README deploys them."""
    return Layout((str(inbox),), split_workers(infer_concurrency, ingest_workers))


def embedded_layout(inbox: str | Path) -> Layout:
    """The embedded default: one `run` process (it starts its own inference child)."""
    return Layout((str(inbox),), embedded=True)


def embedded_inference(batch_size: int, nightly: bool) -> WorkerSpec:
    """`run`'s child: classify tasks in threads so their pages share micro-batches, while decoding in `run`
    overlaps them; `nightly`: it also takes the train queue."""
    return WorkerSpec(("infer", "train") if nightly else ("infer",), "threads", batch_size)


def _forget_the_workers_children(**_: object) -> None:
    """In the embedded beat process: it is forked from the worker with the worker's decoder processes in
    multiprocessing's list of children, and at its exit multiprocessing would join them, which only their parent
    may (an AssertionError traceback at every stop). A forked process owns none of them."""
    import multiprocessing.process

    multiprocessing.process._children.clear()  # what multiprocessing does itself in the children it starts


def celery_worker(spec: WorkerSpec, loglevel: str) -> Worker:
    """The Celery worker of `spec` in this process (`ecg-intake worker`, and `run`'s ingest worker)."""
    from celery.signals import beat_embedded_init

    from worker.celery_app import get_app

    if spec.beat:
        beat_embedded_init.connect(_forget_the_workers_children, weak=False)
    return get_app().Worker(hostname=f"ecg-intake-{os.getpid()}@{socket.gethostname()}", pool_cls=spec.pool,
                            concurrency=spec.concurrency, queues=list(spec.queues), loglevel=loglevel, quiet=True,
                            beat=spec.beat)


class Services:
    """The running processes of a layout, by name; `stop` ends them the way Celery expects."""

    def __init__(self, commands: Mapping[str, list[str]], env: Mapping[str, str], logs: Mapping[str, Path],
                 cwd: Path | None, new_session: bool) -> None:
        self.commands, self.logs = dict(commands), dict(logs)
        self._env, self._cwd, self._new_session = dict(env), cwd, new_session
        self.processes: dict[str, subprocess.Popen] = {}
        for name in self.commands:
            self._start(name, "w")

    def _start(self, name: str, mode: str) -> subprocess.Popen:
        with open(self.logs[name], mode) as log:  # the child keeps its own descriptor
            self.processes[name] = subprocess.Popen(self.commands[name], env=self._env, cwd=self._cwd, stdout=log,
                                                    stderr=subprocess.STDOUT, start_new_session=self._new_session)
        return self.processes[name]

    def __getitem__(self, name: str) -> subprocess.Popen:
        return self.processes[name]

    def alive(self) -> bool:
        return all(process.poll() is None for process in self.processes.values())

    def restart(self, name: str) -> subprocess.Popen:
        """A new process for `name` (after it was killed or exited); its output goes on in the same log."""
        if self.processes[name].poll() is None:
            raise RuntimeError(f"{name} (pid {self.processes[name].pid}) is still running")
        return self._start(name, "a")

    def tail(self, lines: int = 40) -> str:
        """The end of every process's log: what to show when something went wrong."""
        return "\n".join(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                         for path in self.logs.values() if path.exists())

    def stop(self, timeout: float = 60) -> None:
        """Warm shutdown of every process at once (each finishes the task in hand); SIGKILL after `timeout`."""
        all_at_once([partial(stop_gracefully, process, timeout) for process in self.processes.values()])

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start_services(layout: Layout, env: Mapping[str, str], logs: Path, *, cli: Sequence[str] | None = None,
                   cwd: Path | None = None, new_session: bool = False, log_prefix: str = "") -> Services:
    """Start every process of `layout`, each logging to `<logs>/<log_prefix><name>.log`.

    `cli` is the `ecg-intake` command (default: this interpreter's `-m worker.cli`); `new_session` puts each
    process at the head of its own process group, as a service manager does.
    """
    logs.mkdir(parents=True, exist_ok=True)
    prefix = list(cli or CLI)
    commands = {name: [*prefix, *args] for name, args in layout.commands().items()}
    return Services(commands, env, {name: logs / f"{log_prefix}{name}.log" for name in commands}, cwd, new_session)
