"""The `ecg-intake` command as a user runs it, in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


class Cli:
    """Runs the installed `ecg-intake` entry point as a user would, in a subprocess."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd

    def command(self, *args: str) -> list[str]:
        script = Path(sys.executable).parent / "ecg-intake"
        return [str(script), *args] if script.exists() else [sys.executable, "-m", "worker.cli", *args]

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run(self.command(*args), env=self.env, cwd=self.cwd, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"ecg-intake {' '.join(args)} exited {result.returncode}\n"
                                 f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def results(self) -> list[dict]:
        return json.loads(self("results", "--format", "json").stdout)

    def popen(self, *args: str, log: Path) -> subprocess.Popen:
        handle = open(log, "w")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(self.command(*args), env=self.env, cwd=self.cwd, stdout=handle,
                                stderr=subprocess.STDOUT)
