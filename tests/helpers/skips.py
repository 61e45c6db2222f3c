"""Unexpected skips fail the run: a test that skips in CI is a check that never ran, and `-ra` alone only lists it.

Loaded by tests/conftest.py. A skip is expected only when its test id is named in `EXPECTED_SKIPS` and its
reason starts with the text given there; any other skip turns a green run red, with a section saying which.
"""

from __future__ import annotations

import pytest

# test id (or a module's path, for all its tests) -> how its skip reason must start. The GPU engines cannot run
# on a CPU machine (CI's).
EXPECTED_SKIPS: dict[str, str] = {
    "tests/test_engines.py::test_backend_matches_the_cpu_reference[tensorrt]": "tensorrt cannot run on this machine",
    "tests/test_engines.py::test_backend_matches_the_cpu_reference[cuda]": "cuda cannot run on this machine",
    # The suite starts its own Redis and PostgreSQL but not RabbitMQ; CI's machines and most brokers' hosts run one.
    "tests/test_pipeline_services.py::test_rabbitmq_broker_with_a_separate_worker": "no RabbitMQ broker",
    # A whole module: Kubernetes manifests are rendered by kubectl's kustomize, which system-deps.sh cannot install
    # from Debian (its kubernetes-client is 1.20); CI's machines have kubectl.
    "tests/test_deploy_kubernetes.py": "kubectl is not installed",
}


def skip_reason(report: pytest.TestReport) -> str:
    """The reason text of a skipped report, without pytest's `Skipped: ` prefix."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


def is_expected(nodeid: str, reason: str) -> bool:
    prefix = EXPECTED_SKIPS.get(nodeid, EXPECTED_SKIPS.get(nodeid.split("::")[0]))
    return prefix is not None and reason.startswith(prefix)


class SkipGuard:
    """Collects the unexpected skips of one run and fails it if there are any."""

    def __init__(self) -> None:
        self.unexpected: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):  # an xfail is reported as skipped but is not a skip
            return
        reason = skip_reason(report)
        if not is_expected(report.nodeid, reason):
            self.unexpected.append((report.nodeid, reason))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.unexpected and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.unexpected:
            return
        terminalreporter.section("unexpected skips (not in tests/helpers/skips.py EXPECTED_SKIPS)", red=True)
        for nodeid, reason in self.unexpected:
            terminalreporter.line(f"SKIPPED {nodeid}: {reason}")
        terminalreporter.line(f"{len(self.unexpected)} unexpected skip(s): the run fails", red=True)


def register(config: pytest.Config) -> None:
    """Called from tests/conftest.py's pytest_configure."""
    config.pluginmanager.register(SkipGuard(), "ecg-intake-skip-guard")
