"""deploy/: the compose file and both Dockerfiles, checked with the real tools the dev extra installs.

- deploy/compose.yaml against the Compose Specification's schema shipped in check-jsonschema
  (`--builtin-schema vendor.compose-spec`): once as written (check-jsonschema's YAML loader resolves anchors
  and `<<` merge keys) and once as PyYAML resolves it, the way compose reads it; then the stack's invariants.
- deploy/Dockerfile and deploy/Dockerfile.gpu linted by hadolint at warning level (the only rule ignored is
  DL3008, inline, with its reason), then their invariants: a non-root USER, a HEALTHCHECK, pinned base
  images, torch and torchvision pinned as in pyproject.toml; the images' HEALTHCHECK command itself is run
  with this venv's python on a working and on a broken data home.

`docker build` and `docker compose config` themselves are not run: this machine has no Docker engine and
no compose plugin. Nothing here is skipped: a missing tool fails the test.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.gpu"]
BIN = Path(sys.executable).parent
OUR_IMAGES = ("ecg-intake:", "ecg-intake-gpu:")


def _tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{path} missing: install the dev extra (pip install -e '.[dev]')"
    return str(path)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as PyYAML reads it: anchors and `<<` merge keys resolved, as compose resolves them."""
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def our_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if str(svc.get("image", "")).startswith(OUR_IMAGES)}


def _pins() -> dict[str, str]:
    """torch's and torchvision's pins from pyproject.toml's dependencies."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        match = re.fullmatch(r"(torch|torchvision)==([\w.]+)", dep.replace(" ", ""))
        if match:
            pins[match[1]] = match[2]
    assert set(pins) == {"torch", "torchvision"}, deps
    return pins


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        pending = ""
    return out


def _final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    instructions = _instructions(dockerfile)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _args(dockerfile: Path) -> dict[str, str]:
    return dict(arg.split("=", 1) for keyword, arg in _instructions(dockerfile) if keyword == "ARG" and "=" in arg)


# --- compose ---------------------------------------------------------------------------------------------

def test_compose_file_matches_the_compose_specification(tmp_path: Path, compose: dict[str, Any]) -> None:
    checker = _tool("check-jsonschema")
    as_written = _run(checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert as_written.returncode == 0, as_written.stdout + as_written.stderr
    resolved = tmp_path / "compose.resolved.json"
    resolved.write_text(json.dumps(compose))
    as_resolved = _run(checker, "--builtin-schema", "vendor.compose-spec", str(resolved))
    assert as_resolved.returncode == 0, as_resolved.stdout + as_resolved.stderr
    # the schema really looks inside merged services: a key compose does not know is refused
    broken = json.loads(json.dumps(compose))
    broken["services"]["watch"]["read_only_root"] = True
    resolved.write_text(json.dumps(broken))
    assert _run(checker, "--builtin-schema", "vendor.compose-spec", str(resolved)).returncode == 1


def test_every_process_has_its_service(compose: dict[str, Any], our_services: dict[str, dict[str, Any]]) -> None:
    commands = {name: svc["command"] for name, svc in our_services.items()}
    assert commands["migrate"] == ["db", "upgrade"]
    assert commands["watch"] == ["watch"]
    assert commands["ingest"] == ["worker", "--queues", "ingest"]
    assert commands["infer"] == commands["infer-gpu"] == ["worker", "--queues", "infer", "--pool", "threads",
                                                          "--concurrency", "8"]
    assert commands["review"][:1] == ["review"] and "0.0.0.0" in commands["review"]
    assert commands["receive"][:1] == ["receive"]
    assert {"postgres", "redis"} <= set(compose["services"])


def test_our_containers_run_unprivileged_on_a_read_only_root(our_services: dict[str, dict[str, Any]]) -> None:
    for name, svc in our_services.items():
        assert str(svc.get("user", "10001")).split(":")[0] not in {"root", "0"}, name
        assert not svc.get("privileged"), name
        assert svc.get("read_only") is True, name
        assert "/tmp" in svc.get("tmpfs", []), name


def test_app_services_wait_for_the_migration(compose: dict[str, Any], our_services: dict[str, dict[str, Any]]) -> None:
    for name, svc in our_services.items():
        depends = svc["depends_on"]
        if name == "flower":  # reads the broker only
            assert depends == {"redis": {"condition": "service_healthy"}}
            continue
        assert depends["postgres"]["condition"] == "service_healthy", name
        if name != "migrate":
            assert depends["migrate"]["condition"] == "service_completed_successfully", name
            assert depends["redis"]["condition"] == "service_healthy", name
    assert our_services["migrate"]["restart"] == "no"
    services = compose["services"]
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert services["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]


def test_gpu_worker_is_behind_its_profile_with_an_nvidia_device(compose: dict[str, Any]) -> None:
    with_profiles = {name: svc["profiles"] for name, svc in compose["services"].items() if "profiles" in svc}
    assert with_profiles == {"infer-gpu": ["gpu"], "flower": ["monitor"]}
    gpu = compose["services"]["infer-gpu"]
    assert gpu["build"]["dockerfile"] == "deploy/Dockerfile.gpu"
    assert gpu["environment"]["ECG_INTAKE_ENGINE"] == "cuda"
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_exactly_one_beat(our_services: dict[str, dict[str, Any]]) -> None:
    beats = [name for name, svc in our_services.items() if "--beat" in svc["command"]]
    assert beats == ["train"]
    assert our_services["train"]["deploy"]["replicas"] == 1


def test_published_ports(our_services: dict[str, dict[str, Any]]) -> None:
    published = {name: svc.get("ports", []) for name, svc in our_services.items() if svc.get("ports")}
    assert published == {"review": ["8080:8080"], "receive": ["11112:11112"], "flower": ["127.0.0.1:5555:5555"]}


def test_flower_reads_the_workers_broker(our_services: dict[str, dict[str, Any]]) -> None:
    """The broker URL the containers hold (ecg-intake.env may change it), expanded by the container's shell."""
    flower = our_services["flower"]
    assert flower["entrypoint"][:2] == ["sh", "-c"] and flower["command"] == []
    assert 'exec celery --broker "$$ECG_INTAKE_BROKER_URL" flower ' in flower["entrypoint"][2]
    assert flower["environment"]["ECG_INTAKE_BROKER_URL"] == our_services["ingest"]["environment"][
        "ECG_INTAKE_BROKER_URL"]


def test_metrics_are_served_inside_the_network(our_services: dict[str, dict[str, Any]]) -> None:
    """Every process serves /metrics, /healthz and /readyz on ECG_INTAKE_METRICS_PORT (unpublished: for a Prometheus
    on the compose network) and adds its process tree up in a folder on its own tmpfs (docs/metrics.md)."""
    for name, svc in our_services.items():
        env = svc["environment"]
        settings = Settings(metrics_port=env["ECG_INTAKE_METRICS_PORT"], metrics_host=env["ECG_INTAKE_METRICS_HOST"])
        assert settings.metrics_port > 0 and settings.metrics_host == "0.0.0.0", name
        assert any(env["PROMETHEUS_MULTIPROC_DIR"].startswith(f"{tmpfs}/") for tmpfs in svc["tmpfs"]), name


def test_volumes_cover_what_the_service_writes(compose: dict[str, Any],
                                               our_services: dict[str, dict[str, Any]]) -> None:
    """Named volumes for the home, the inbox, archive, quarantine and models, where Settings puts them."""
    for name, svc in our_services.items():
        env = svc["environment"]
        settings = Settings(home=Path(env["ECG_INTAKE_HOME"]), inboxes=json.loads(env["ECG_INTAKE_INBOXES"]))
        mounts = dict(volume.split(":")[::-1] for volume in svc["volumes"])
        expected = {str(settings.home_dir): "data", str(settings.archive_dir): "archive",
                    str(settings.quarantine_dir): "quarantine", str(settings.models_dir): "models",
                    str(settings.receive_inbox_dir): "inbox"}
        assert mounts == expected, name
    assert set(expected.values()) | {"pgdata", "redisdata"} == set(compose["volumes"])


def test_no_literal_passwords(compose: dict[str, Any]) -> None:
    """Passwords come from ${ECG_INTAKE_DB_PASSWORD}; the fallback says it is a placeholder."""
    placeholder = "${ECG_INTAKE_DB_PASSWORD:-insecure-dev-placeholder}"
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            value = str(value)
            if "PASSWORD" in key:
                assert value == placeholder, (name, key)
            for credential in re.findall(r"://[^/@\s]*?:([^@\s]*)@", value):
                assert credential == placeholder, (name, key)
    assert "insecure" in placeholder and "placeholder" in placeholder


# --- Dockerfiles -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    result = _run(_tool("hadolint"), "--no-color", "--failure-threshold", "warning", str(dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr
    ignores = re.findall(r"#\s*hadolint ignore=(\S+)", dockerfile.read_text())
    assert set(ignores) <= {"DL3008"}, ignores


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_invariants(dockerfile: Path) -> None:
    args, final = _args(dockerfile), _final_stage(dockerfile)
    pins = _pins()
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCHVISION_VERSION"] == pins["torchvision"]
    text = dockerfile.read_text()
    assert '"torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"' in text

    for keyword, arg in _instructions(dockerfile):
        if keyword == "FROM":
            image = arg.split()[0]
            image = args.get(image.strip("${}"), image)
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest" and re.search(r"\d", tag), arg

    users = [arg for keyword, arg in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert _healthcheck(dockerfile) == ["ecg-intake", "doctor", "--only", "database,broker,folders"]
    assert ("ENTRYPOINT", '["ecg-intake"]') in final
    env = " ".join(arg for keyword, arg in final if keyword == "ENV")
    for setting in ("ECG_INTAKE_HOME=/data", "ECG_INTAKE_BUNDLE=/opt/ecg-intake/models/default", "HOME=/tmp",
                    "MPLCONFIGDIR=/tmp/", "TORCHINDUCTOR_CACHE_DIR=/data/"):
        assert setting in env, setting
    assert ("COPY", "models/default /opt/ecg-intake/models/default") in final
    volumes = [json.loads(arg) for keyword, arg in final if keyword == "VOLUME"]
    assert volumes == [["/data", "/inbox", "/tmp"]]
    assert "poppler-utils" in text
    # A wheel install: the runtime stage carries the virtual environment and the model, never a source tree.
    assert '"./[${EXTRAS}]"' in text and "onnx" in args["EXTRAS"].split(",") and "--editable" not in text
    assert not [arg for keyword, arg in final if keyword == "COPY" and "/opt/ecg-intake " in arg + " "
                and "models/default" not in arg]
    labels = " ".join(arg for keyword, arg in final if keyword == "LABEL")
    assert "org.opencontainers.image.title=" in labels and "org.opencontainers.image.version=" in labels


def _healthcheck(dockerfile: Path) -> list[str]:
    """The HEALTHCHECK's exec-form command."""
    (arg,) = [arg for keyword, arg in _final_stage(dockerfile) if keyword == "HEALTHCHECK"]
    assert "--interval=" in arg and "--timeout=" in arg
    return json.loads(arg.split(" CMD ", 1)[1])


def test_healthcheck_runs_the_doctors_live_checks(tmp_path: Path) -> None:
    """Both images' health command, run here with this venv's python: healthy on a working home, not on a
    broken one (an inbox that cannot be created), saying which check failed."""
    (command,) = {tuple(_healthcheck(dockerfile)) for dockerfile in DOCKERFILES}
    argv = [str(BIN / command[0]), *command[1:]]
    env = {"PATH": str(BIN), "HOME": str(tmp_path), "ECG_INTAKE_HOME": str(tmp_path / "data")}
    (tmp_path / "inbox").mkdir()
    healthy = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
                             env={**env, "ECG_INTAKE_INBOXES": json.dumps([str(tmp_path / "inbox")])})
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    (tmp_path / "not-a-folder").write_text("")
    broken = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
                            env={**env, "ECG_INTAKE_INBOXES": json.dumps([str(tmp_path / "not-a-folder" / "in")])})
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "inbox" in broken.stdout


def test_cpu_image_uses_the_cpu_wheels_and_gpu_image_cuda() -> None:
    cpu, gpu = (dockerfile.read_text() for dockerfile in DOCKERFILES)
    assert "--index-url https://download.pytorch.org/whl/cpu" in cpu
    assert "ECG_INTAKE_ENGINE=cuda" in gpu and "download.pytorch.org/whl/cpu" not in gpu
    assert re.search(r"^FROM nvidia/cuda:13\.0\.\d+-base-ubuntu\d\d\.04$", gpu, re.MULTILINE)
    assert "ARG EXTRAS=onnx\n" in gpu


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "tests", "docs", "ecg-intake-data", "demo-inbox", "**/.env"} <= patterns
    assert {"models/*", "!models/default"} <= patterns
