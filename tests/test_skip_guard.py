"""The skip guard (tests/helpers/skips.py): a skip not named with its reason fails the run; a named one does not.

Each case runs pytest in a subprocess on a generated test file, with the guard loaded the way tests/conftest.py
loads it and a list of expected skips of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CONFTEST = """
from tests.helpers import skips

skips.EXPECTED_SKIPS.clear()
skips.EXPECTED_SKIPS["test_generated.py::test_gpu"] = "no GPU on this machine"


def pytest_configure(config):
    skips.register(config)
"""


def _run_pytest(folder: Path, body: str) -> subprocess.CompletedProcess:
    (folder / "conftest.py").write_text(CONFTEST)
    (folder / "test_generated.py").write_text("import pytest\n\n" + body)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(folder),
                           str(folder)], cwd=folder, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("body", "code"), [
    pytest.param("def test_ok():\n    pass\n", 0, id="no-skip"),
    pytest.param("def test_gpu():\n    pytest.skip('no GPU on this machine: no CUDA device')\n", 0, id="expected"),
    pytest.param("@pytest.mark.xfail(reason='known')\ndef test_x():\n    assert False\n", 0, id="xfail-is-no-skip"),
    pytest.param("def test_db():\n    pytest.skip('no database')\n", 1, id="unexpected"),
    pytest.param("@pytest.mark.skipif(True, reason='no broker')\ndef test_broker():\n    pass\n", 1, id="skipif"),
    pytest.param("def test_gpu():\n    pytest.skip('driver too old')\n", 1, id="named-test-other-reason"),
    pytest.param("def test_other():\n    pytest.skip('no GPU on this machine')\n", 1, id="expected-reason-other-test"),
])
def test_the_run_fails_on_an_unexpected_skip(body: str, code: int, tmp_path: Path) -> None:
    result = _run_pytest(tmp_path, body)
    assert result.returncode == code, result.stdout[-3000:] + result.stderr[-2000:]
    if code:
        assert "unexpected skips" in result.stdout and "SKIPPED test_generated.py::test_" in result.stdout, \
            result.stdout[-3000:]
    else:
        assert "unexpected skips" not in result.stdout, result.stdout[-3000:]
