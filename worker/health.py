"""/metrics, /healthz and /readyz of a long-running process (`run`, `watch`, `worker`, `receive`) on its own port.

/healthz is liveness: it answers while the process can answer at all, with no I/O, so a slow database never
gets a healthy process restarted. /readyz is readiness: the doctor's checks the service needs (`SERVICE_NEEDS`),
run at most once every `READY_CACHE_S` however many probes ask, 503 with the failing checks. The review app
answers the same three paths itself (worker/review/probes.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from worker import metrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from worker.settings import Settings

log = logging.getLogger(__name__)
READY_CACHE_S = 5.0


class Readiness:
    """The service's doctor checks, cached for `READY_CACHE_S`: (HTTP status, JSON body)."""

    def __init__(self, settings: Settings, service: str, details: bool = True) -> None:
        """`details=False` where anyone may ask (the review app's port): a failing check is named, never
        described, since its detail can name folders and hosts."""
        from worker.doctor import SERVICE_NEEDS

        self.settings, self.groups, self.details = settings, SERVICE_NEEDS[service], details
        self._lock = threading.Lock()
        self._answer: tuple[int, dict[str, Any]] = (503, {})
        self._at = float("-inf")

    def __call__(self) -> tuple[int, dict[str, Any]]:
        with self._lock:  # a storm of probes waits for the one check in flight
            if time.monotonic() - self._at >= READY_CACHE_S:
                self._answer = self._check()
                self._at = time.monotonic()
            return self._answer

    def _check(self) -> tuple[int, dict[str, Any]]:
        from worker.doctor import faults, run_checks

        try:
            checks = run_checks(self.settings, self.groups)
        except Exception as exc:  # a check that itself broke: not ready, and say so
            log.exception("readiness checks failed")
            return 503, {"ready": False, "error": type(exc).__name__}
        failing = faults(checks)
        if failing:
            return 503, {"ready": False, "failing": [check.as_dict() if self.details else {"name": check.name}
                                                     for check in failing]}
        return 200, {"ready": True, "checks": {check.name: check.status for check in checks}}


def app(registry: CollectorRegistry, ready: Callable[[], tuple[int, dict[str, Any]]]) -> Callable:
    """The WSGI app: prometheus_client's exposition at /metrics, the probes beside it, 404 elsewhere."""
    from prometheus_client import make_wsgi_app

    exposition = make_wsgi_app(registry)

    def answer(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return exposition(environ, start_response)
        if path == "/healthz":
            status, body, kind = 200, b"ok\n", "text/plain; charset=utf-8"
        elif path == "/readyz":
            code, found = ready()
            status, body, kind = code, json.dumps(found).encode(), "application/json"
        else:
            status, body, kind = 404, b"not found\n", "text/plain; charset=utf-8"
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [("Content-Type", kind), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
        return [body]

    return answer


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *_: Any) -> None:  # a probe every few seconds is not news
        pass


def serve(settings: Settings, service: str, queue_depth: bool = True) -> WSGIServer:
    """Serve the three paths on `metrics_host:metrics_port` from a daemon thread; OSError when the port is taken."""
    server = make_server(settings.metrics_host, settings.metrics_port,
                         app(metrics.registry(queue_depth), Readiness(settings, service)),
                         server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics, probes at /healthz and /readyz", settings.metrics_host,
             server.server_address[1])
    return server
