"""Killing the processes a test started, as a crash would: no process of theirs gets to clean up.

(A graceful stop is the product's own: `worker.processes.stop_gracefully`.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the process and the children it spawned (a worker's decoder child): nothing gets to clean up."""
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    for pid in [process.pid, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()
