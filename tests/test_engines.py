"""Every backend that can run here against the PyTorch CPU reference, and `auto`'s choice with its reasons."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from model_training.bundle import export_bundle
from worker.engine import AUTO_ORDER, load_engine, unavailable


@pytest.fixture(scope="module")
def exported_bundle(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("exported") / "bundle"
    shutil.copytree(bundle_dir, copy)
    export_bundle(copy)
    return copy


def _pages(manifest, n: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    pages = np.full((n, *manifest.input_size), 255, np.uint8)
    for page in pages:  # dark strokes on paper, like a cleaned ECG page
        rows = rng.integers(0, page.shape[0], 40)
        page[rows, :] = rng.integers(0, 80, (40, page.shape[1]))
    return pages


@pytest.mark.parametrize("kind", [k for k in AUTO_ORDER if k != "cpu"])
def test_backend_matches_the_cpu_reference(kind: str, exported_bundle: Path) -> None:
    reason = unavailable(kind)
    if reason:
        pytest.skip(f"{kind} cannot run on this machine: {reason}")
    reference = load_engine(exported_bundle, "cpu", batch_size=4)
    engine = load_engine(exported_bundle, kind, batch_size=4)
    pages = _pages(reference.manifest)
    expected, got = reference.predict(pages), engine.predict(pages)
    assert got.shape == expected.shape == (5, 5)
    tolerance = 1e-2 if kind in ("cuda", "tensorrt") else 1e-4  # fp16 on the GPU, fp32 elsewhere
    np.testing.assert_allclose(got, expected, atol=tolerance)


def test_auto_explains_what_it_skipped(exported_bundle: Path, bundle_dir: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="worker.engine"):
        engine = load_engine(exported_bundle, "auto")
    expected = next(k for k in AUTO_ORDER if unavailable(k) is None)
    assert engine.name == expected
    for kind in AUTO_ORDER[: AUTO_ORDER.index(expected)]:
        assert f"{kind} skipped: {unavailable(kind)}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="worker.engine"):
        assert load_engine(bundle_dir, "auto").name in ("cpu", "cuda", "tensorrt")  # no ONNX file, no cache
    if unavailable("onnx") is None and unavailable("cuda"):
        assert "onnx skipped: the bundle has no ONNX file and no engine cache" in caplog.text


def test_unknown_or_missing_engine_is_a_clear_error(bundle_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        load_engine(bundle_dir, "vulkan")
    if unavailable("tensorrt"):
        with pytest.raises(RuntimeError, match="tensorrt is not available"):
            load_engine(bundle_dir, "tensorrt")


def test_micro_batching_shares_forward_passes_and_returns_each_caller_its_rows(bundle_dir: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from worker.engine.batching import BatchingEngine

    reference = load_engine(bundle_dir, "cpu", batch_size=8)
    pages = _pages(reference.manifest, n=12)
    expected = reference.predict(pages)
    batching = BatchingEngine(reference, batch_size=8, max_wait_ms=2000, callers=6)
    try:
        with ThreadPoolExecutor(6) as pool:  # six tasks of two pages each: two passes of up to 8 pages
            results = list(pool.map(lambda i: batching.predict(pages[2 * i : 2 * i + 2]), range(6)))
    finally:
        batching.close()
    np.testing.assert_allclose(np.concatenate(results), expected, atol=1e-5)
    assert sum(batching.batches) == 12 and max(batching.batches) > 2 and all(b <= 9 for b in batching.batches)


def test_micro_batching_does_not_hold_a_lone_caller(bundle_dir: Path) -> None:
    import time

    from worker.engine.batching import BatchingEngine

    batching = BatchingEngine(load_engine(bundle_dir, "cpu"), batch_size=8, max_wait_ms=5000, callers=1)
    page = _pages(batching.manifest, n=1)
    try:
        batching.predict(page)  # warm-up
        started = time.monotonic()
        batching.predict(page)
        assert time.monotonic() - started < 2.5  # one possible caller: nobody to wait for (the wait is 5 s)
    finally:
        batching.close()


def test_auto_exports_onnx_once_into_the_engine_cache(bundle_dir: Path, tmp_path: Path) -> None:
    """The shipped bundle carries weights only (size); the worker exports its ONNX file on first start."""
    if unavailable("onnx") or not unavailable("cuda"):
        pytest.skip("onnx is not auto's choice on this machine")
    engine = load_engine(bundle_dir, "auto", cache_dir=tmp_path)
    assert engine.name == "onnx"
    exported = tmp_path / engine.manifest.version / "model.onnx"
    assert exported.is_file() and not any(p.name != "model.onnx" for p in exported.parent.iterdir())
    stamp = exported.stat().st_mtime_ns
    reference = load_engine(bundle_dir, "cpu")
    pages = _pages(reference.manifest)
    np.testing.assert_allclose(load_engine(bundle_dir, "auto", cache_dir=tmp_path).predict(pages),
                               reference.predict(pages), atol=1e-4)
    assert exported.stat().st_mtime_ns == stamp


def test_registry_names_a_backend_module_and_class_for_every_engine() -> None:
    import importlib
    import inspect

    from worker.engine import ENGINES, KINDS

    assert set(ENGINES) == set(AUTO_ORDER) == set(KINDS) - {"auto"}
    for kind, (module_name, class_name) in ENGINES.items():
        module = importlib.import_module(module_name)
        assert callable(module.is_available) and hasattr(module, class_name)
        assert module.is_available() == unavailable(kind)
        parameters = inspect.signature(getattr(module, class_name)).parameters
        assert list(parameters)[:4] == ["bundle_dir", "threads", "batch_size", "cache_dir"]  # one way to start any
        assert {parameters[name].kind for name in ("threads", "batch_size", "cache_dir")} == {
            inspect.Parameter.KEYWORD_ONLY}


def test_engine_report_gives_each_engine_its_reason(exported_bundle: Path, bundle_dir: Path, tmp_path: Path) -> None:
    from worker.engine import engine_report

    report = engine_report(exported_bundle)
    assert list(report) == list(AUTO_ORDER) and report["cpu"] is None
    for kind in AUTO_ORDER:
        assert report[kind] == unavailable(kind)  # the exported bundle carries its ONNX file
    if unavailable("onnx") is None:
        assert "no ONNX file" in engine_report(bundle_dir)["onnx"]
        assert engine_report(bundle_dir, cache_dir=tmp_path)["onnx"] is None
        assert not any(tmp_path.iterdir())  # reporting exports nothing


def test_asking_about_onnx_imports_no_torch(exported_bundle: Path) -> None:
    import subprocess
    import sys

    probe = ("import sys; from worker.engine import unavailable, _bundle_reason; "
             f"print(unavailable('onnx'), _bundle_reason('onnx', {str(exported_bundle)!r}, None), "
             "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "False"
