"""Input files for the serving benchmarks, written by `ecg-intake synth` in a child process.

The worker does not import the synthesiser; the command line it ships with runs it, with the same
records for the same arguments.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def synth_inputs(folder: Path, n: int, formats: tuple[str, ...], artifacts: str, seed: int, dpi: int) -> Path:
    """`n` synthetic records in each of `formats` (and labels.csv) in `folder`; returns `folder`."""
    command = [sys.executable, "-m", "worker.cli", "synth", "--out", str(folder), "--n", str(n),
               "--formats", ",".join(formats), "--artifacts", artifacts, "--seed", str(seed), "--dpi", str(dpi)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"`{' '.join(command[2:])}` failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return folder
