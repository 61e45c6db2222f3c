"""Decoding in a separate, long-lived process, so a hung or crashing decoder cannot take the worker down.

C decoders (OpenCV, pylibjpeg, Pillow) cannot be interrupted from Python, and a segfault on a
malicious file would end the whole worker. The child process decodes one file at a time; when the
time limit passes it is killed and replaced, and the file gets `decode_timeout`. A child that dies
mid-file gives `corrupt`. With a `Preparation` the child also cleans each page and makes its
thumbnail, so only the small results come back through the pipe (a 200-DPI A4 page is about 12 MB).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
from pathlib import Path
from typing import Any

from ingest.decode import DecodeLimits, decode
from ingest.page import Page, PreparedPage
from ingest.preprocess import Preparation
from ingest.reasons import IngestError, InstallationError, Reason
from ingest.sniff import FileType

log = logging.getLogger(__name__)


STARTUP_TIMEOUT_S = 120.0


def _decode(path: Path, limits: DecodeLimits, preparation: Preparation | None) -> tuple[FileType, list[Any]]:
    file_type, pages = decode(path, limits, working_copy=preparation is not None)
    return file_type, [preparation(p) for p in pages] if preparation else pages


def _serve(connection: multiprocessing.connection.Connection) -> None:
    """Decode what the parent sends until it hangs up.

    SIGTERM or SIGINT sent to the whole process group (systemd's default, Ctrl-C) while a file is in hand
    must not kill the child mid-file: the parent, shutting down warmly, would read the death as `corrupt`
    and quarantine a good file. The child finishes that file, answers, then exits; idle, it exits at once.
    """
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    import cv2

    cv2.setNumThreads(1)  # files decode side by side in several of these processes; threads within one only add cost
    connection.send("ready")  # imports done: from here on the clock is the file's
    while True:
        try:
            while not connection.poll(0.2):
                if stop.is_set():
                    return
            request = connection.recv()
        except (EOFError, OSError):
            return
        path, limits, preparation = request
        try:
            connection.send(("ok", _decode(Path(path), limits, preparation)))
        except IngestError as error:
            connection.send(("error", (error.reason.value, error.message)))
        except InstallationError as error:
            connection.send(("installation", str(error)))
        except Exception as exc:  # sent back so the caller decides; the child stays up
            connection.send(("exception", f"{type(exc).__name__}: {exc}"))
        if stop.is_set():
            return


class Decoder:
    """`decode` with a hard time limit; `isolated=False` decodes in this process (limits still apply)."""

    def __init__(self, limits: DecodeLimits, isolated: bool = True) -> None:
        self.limits = limits
        self.isolated = isolated
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: multiprocessing.connection.Connection | None = None

    def start(self) -> None:
        """Start the decoder process now, so the first file a worker takes does not wait for its imports."""
        if self.isolated:
            self._ensure_child()

    def decode(self, path: Path) -> tuple[FileType, list[Page]]:
        return self._request(path, None)

    def decode_prepared(self, path: Path, preparation: Preparation) -> tuple[FileType, list[PreparedPage]]:
        """Decode and prepare in the child: the way intake uses it, cleaning included in the time limit."""
        return self._request(path, preparation)

    def _request(self, path: Path, preparation: Preparation | None) -> tuple[FileType, list[Any]]:
        connection = self._ensure_child() if self.isolated else None
        if connection is None:
            return _decode(path, self.limits, preparation)
        self.limits.check_file_size(path.stat().st_size)
        connection.send((str(path), self.limits, preparation))
        if not connection.poll(self.limits.timeout_s):
            self.close()
            raise IngestError(Reason.DECODE_TIMEOUT, f"decoding took longer than {self.limits.timeout_s:g}s")
        try:
            status, payload = connection.recv()
        except (EOFError, OSError) as exc:
            code = self._process.exitcode if self._process else None
            self.close()
            raise IngestError(Reason.CORRUPT, f"the decoder process died on this file (exit code {code})") from exc
        if status == "ok":
            return payload
        if status == "error":
            raise IngestError(Reason(payload[0]), payload[1])
        if status == "installation":
            raise InstallationError(payload)
        raise RuntimeError(f"decoder failed: {payload}")

    def _ensure_child(self) -> multiprocessing.connection.Connection | None:
        if self._process is not None and self._process.is_alive() and self._connection is not None:
            return self._connection
        self.close()
        context = multiprocessing.get_context("spawn")  # no inherited threads or locks from torch or Celery
        parent, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), name="ecg-intake-decoder", daemon=True)
        try:
            self._process.start()
        except AssertionError as exc:  # a daemonic pool process (Celery prefork) may not have children
            log.warning("decoding in-process, without the time limit: %s", exc)
            self.isolated, self._process = False, None
            return None
        except BaseException:
            self._process = None  # never started: nothing to join
            raise
        child.close()
        self._connection = parent
        if not parent.poll(STARTUP_TIMEOUT_S) or parent.recv() != "ready":
            self.close()
            raise RuntimeError("the decoder process did not start")
        return parent

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=5)
            self._process = None

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
