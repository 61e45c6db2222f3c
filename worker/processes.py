"""Child processes of the CLI and the benchmarks (workers, `run`), stopped the way Celery expects."""

from __future__ import annotations

import signal
import subprocess


def stop_gracefully(process: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM is Celery's warm shutdown: the tasks it holds finish and commit; SIGKILL only after `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
