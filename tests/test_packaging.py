"""A normal (not editable) install carries every file the packages read at run time: the review UI's templates and
static files, the training presets and Alembic's template. The tests run from an editable install, which would
never notice them missing; container images and users' installs do."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ingest", "model_training", "worker", "migrations")


def test_the_wheel_holds_every_data_file_of_the_packages(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy, so no build/ folder left in the checkout can fill the gaps
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("ecg_intake-*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    data_files = {path.relative_to(ROOT).as_posix() for package in PACKAGES for path in (ROOT / package).rglob("*")
                  if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts}
    assert {"worker/review/templates/page.html", "model_training/presets/stage1.toml"} <= data_files
    assert not data_files - inside, f"left out of the wheel: {sorted(data_files - inside)}"
    assert "migrations/versions/0001_initial_schema.py" in inside
