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


LAYERS = ("ingest", "model_training", "worker")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    """A module or package of the project, judged by its file."""
    base = ROOT.joinpath(*dotted.split("."))
    return dotted.split(".")[0] in LAYERS and (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file())


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _absolute(module: str | None, level: int, importer: str, is_package: bool) -> str | None:
    """The absolute name of `from <level dots><module> import ...` written in `importer`."""
    if level == 0:
        return module
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[:len(package) - (level - 1)]
    return ".".join([*base, module] if module else base) or None


def _dotted(node: ast.expr) -> list[str] | None:
    """`a.b.c` as ["a", "b", "c"]; None when the chain does not start at a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


def _private_in_path(dotted: str) -> str | None:
    """The first private part of a project module path (`worker._x.y` -> `worker._x`), if any."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if _private(part):
            return ".".join(parts[:i + 1])
    return None


def _private_imports(path: Path) -> set[str]:
    """Every private name of another project module that this file imports: `from m import _x`, a private module
    in an import path, and `m._x` on a module it imported (under any alias)."""
    importer, is_package = _module_name(path), path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    modules: dict[str, str] = {}  # local name -> the project module it is bound to
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in LAYERS:
                    continue
                if private := _private_in_path(alias.name):
                    found.add(private)
                if alias.asname:
                    modules[alias.asname] = alias.name
                else:
                    modules[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node.module, node.level, importer, is_package)
            if not source or source.split(".")[0] not in LAYERS or source == importer:
                continue
            if private := _private_in_path(source):
                found.add(private)
            for alias in node.names:
                if _private(alias.name):
                    found.add(f"{source}.{alias.name}")
                elif _is_module(f"{source}.{alias.name}"):
                    modules[alias.asname or alias.name] = f"{source}.{alias.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not (chain := _dotted(node)) or chain[0] not in modules:
            continue
        parts = [*modules[chain[0]].split("."), *chain[1:]]
        # the longest prefix that is a module; the name right after it is what is taken from that module
        cut = max(i for i in range(1, len(parts) + 1) if i == 1 or _is_module(".".join(parts[:i])))
        if cut < len(parts) and _private(parts[cut]) and ".".join(parts[:cut]) != importer:
            found.add(".".join(parts[:cut + 1]))
    return found


def test_no_module_imports_a_private_name_of_another() -> None:
    """A leading underscore means "this module's own": no other module of the layers takes it, by `from m import
    _x`, by `m._x`, or through a package's own `__init__` (dunders such as `__version__` are public)."""
    offenders = sorted(f"{_module_name(f)}: {name}" for layer in LAYERS for f in sorted((ROOT / layer).rglob("*.py"))
                       for name in _private_imports(f))
    assert not offenders, ("private names imported from another module (make them public, or move the shared "
                           "code to where both can use it):\n" + "\n".join(offenders))


TRAINER = ("model_training.train", "model_training.pages", "model_training.evaluate", "model_training.synth")


@pytest.mark.parametrize("module", ["worker.tasks", "worker.intake", "worker.classify", "worker.serving"])
def test_the_serving_core_loads_no_trainer(module: str, tmp_path: Path) -> None:
    """Serving needs the manifest, numpy, the engine and the database: importing the tasks, intake, classify or
    the serving owner (in a fresh interpreter) loads no training, page drawing, evaluation or synthetic data."""
    if not _is_module(module):
        pytest.skip(f"{module} does not exist")
    probe = (f"import sys, {module}\n"
             f"print(','.join(n for n in {TRAINER!r} if n in sys.modules))\n")
    env = {**os.environ, "ECG_INTAKE_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {module} loaded {out.stdout.strip()}"
