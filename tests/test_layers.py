"""Imports flow one way: ingest -> model_training -> worker; ingest stays free of Celery, SQL and torch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "ingest": {"worker", "model_training", "celery", "kombu", "sqlalchemy", "alembic", "torch", "timm"},
    "model_training": {"worker", "celery", "kombu", "sqlalchemy", "alembic"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package: str) -> None:
    files = list((ROOT / package).rglob("*.py"))
    assert files
    offenders = {str(f.relative_to(ROOT)): sorted(_imports(f) & FORBIDDEN[package]) for f in files}
    assert {f: bad for f, bad in offenders.items() if bad} == {}


@pytest.mark.parametrize("module", ["model_training.manifest", "worker.engine.onnx_cpu", "worker.intake",
                                    "worker.celery_app", "ingest.watch"])
def test_light_serving_core_loads_no_torch(module: str) -> None:
    """The manifest, the ONNX engine, intake and the watcher's producer run without torch or timm
    (a fresh interpreter, to be sure)."""
    probe = (f"import sys, {module}; "
             "print(','.join(sorted(n for n in ('torch', 'timm') if n in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, by full dotted name (absolute imports only, as the project writes them)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_the_worker_does_not_import_the_synthetic_data_generator() -> None:
    """Synthetic data is for training and benchmarks under model_training; the service never needs it."""
    offenders = {
        str(f.relative_to(ROOT)) for f in (ROOT / "worker").rglob("*.py")
        if any(name == "model_training.synth" or name.startswith("model_training.synth.")
               for name in _imported_modules(f))
    }
    assert offenders == set()


def test_sending_a_claim_loads_no_task_module_and_importing_makes_no_folder(tmp_path: Path) -> None:
    """The watcher sends tasks by name: no decoders, no model, no tasks; importing the app touches no disk."""
    probe = (
        "import sys, pathlib\n"
        "import worker.celery_app as c\n"
        f"home = pathlib.Path({str(tmp_path / 'home')!r})\n"
        "assert not home.exists(), 'importing the Celery app created folders'\n"
        "from ingest.watch import Claim\n"
        "c.submit_claim(Claim(home / 'a.pdf', home / 'a.pdf', 'ward'))\n"
        "heavy = ('torch', 'timm', 'cv2', 'worker.tasks', 'worker.intake', 'ingest.decode')\n"
        "print(','.join(n for n in heavy if n in sys.modules))\n"
    )
    env = {**os.environ, "ECG_INTAKE_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
    queued = list((tmp_path / "home" / "broker" / "queue").iterdir())
    assert len(queued) == 1 and b"ecg_intake.intake_file" in queued[0].read_bytes()
