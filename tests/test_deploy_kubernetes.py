"""deploy/k8s: each overlay renders with kustomize and its documents are valid, with the invariants that matter.

How it is checked, with real tools and no cluster:

- `kubectl kustomize deploy/k8s/overlays/<cpu|gpu>` renders the overlay (kubectl must be on PATH: it is not
  installed by deploy/system-deps.sh; without it the module's tests skip with that reason, an expected skip
  in tests/helpers/skips.py, so CI, whose machines have kubectl, runs them).
- Every Kubernetes built-in document is validated by kubernetes-validate against the OpenAPI schema it bundles
  for Kubernetes K8S_VERSION, in strict mode (an unknown field is an error). The Secret template, which the
  kustomization leaves out on purpose, is validated the same way.
- kubernetes-validate bundles no CRDs and this machine has no internet. No package on the index ships KEDA's CRD
  schema as a file (cloudcoil-models-keda has generated Python models only), so the KEDA documents are
  validated against deploy/k8s/schemas/keda-*.json: OUR TRANSCRIPTION of KEDA's ScaledObject and
  TriggerAuthentication CRDs (keda.sh/v1alpha1, fields as in KEDA 2.16), additionalProperties false. It is not
  KEDA's own schema: a field KEDA renames or adds is not caught until someone updates it.
- The redis trigger's metadata keys are checked against the redis scaler parameters KEDA documents.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import types
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kombu.transport import redis as kombu_redis

from worker.celery_app import QUEUES, TASK_ROUTES, create_celery
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
K8S_VERSION = "1.32.0"  # one kubernetes-validate bundles; the kubectl client here is 1.32 too
KEDA_API = "keda.sh/v1alpha1"
KEDA_SCHEMAS = {"ScaledObject": "keda-scaledobject.json", "TriggerAuthentication": "keda-triggerauthentication.json"}
# KEDA's redis scaler (https://keda.sh/docs/latest/scalers/redis-lists/): the metadata keys it reads.
REDIS_SCALER_KEYS = {"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "username",
                     "usernameFromEnv", "passwordFromEnv", "listName", "listLength", "activationListLength",
                     "databaseIndex", "enableTLS", "unsafeSsl"}
SECRET = "ecg-intake"
SECRET_KEYS = {"ECG_INTAKE_DATABASE_URL", "ECG_INTAKE_BROKER_URL", "ECG_INTAKE_REVIEW_SECRET"}
SCALED = {"ingest": "ecg-intake-worker-ingest", "infer": "ecg-intake-worker-infer"}  # queue -> Deployment
TRAIN = "ecg-intake-worker-train"
INFER = SCALED["infer"]


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (needed to render deploy/k8s with its built-in kustomize): "
                    "install kubectl >= 1.27 and put it on PATH")
    return kubectl


_RENDERED: dict[str, list[dict]] = {}


def render(overlay: str) -> list[dict]:
    if overlay not in _RENDERED:
        done = subprocess.run([_kubectl(), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True,
                              text=True, timeout=60)
        if done.returncode != 0:
            pytest.fail(f"kubectl kustomize overlays/{overlay} failed:\n{done.stderr}", pytrace=False)
        _RENDERED[overlay] = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    return _RENDERED[overlay]


def of_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_specs(docs: list[dict]) -> dict[str, dict]:
    return {f'{doc["kind"]}/{doc["metadata"]["name"]}': doc["spec"]["template"]["spec"]
            for doc in docs if doc["kind"] in ("Deployment", "Job")}


def redis_list_name(queue: str) -> str:
    """The Redis list kombu keeps a Celery queue's waiting messages in (priority 0: every message we send)."""
    channel = types.SimpleNamespace(priority_steps=kombu_redis.Channel.priority_steps, sep=kombu_redis.Channel.sep)
    channel.priority = lambda n: kombu_redis.Channel.priority(channel, n)
    return kombu_redis.Channel._q_for_pri(channel, queue, 0)


def _k8s_validate(doc: dict) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f'{doc["kind"]}/{doc["metadata"]["name"]}: {exc.message} at {list(exc.path)}', pytrace=False)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_documents_validate(overlay):
    docs = render(overlay)
    kinds = {doc["kind"] for doc in docs}
    assert {"ConfigMap", "PersistentVolumeClaim", "Job", "Deployment", "Service", "Ingress", "PodDisruptionBudget",
            "ScaledObject", "TriggerAuthentication"} <= kinds, kinds
    for doc in docs:
        if doc["apiVersion"] == KEDA_API:
            schema = json.loads((K8S / "schemas" / KEDA_SCHEMAS[doc["kind"]]).read_text())
            errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=str)
            assert not errors, f'{doc["kind"]}/{doc["metadata"]["name"]}: ' + "; ".join(
                f"{e.message} at {list(e.path)}" for e in errors)
        else:
            _k8s_validate(doc)


def test_strict_validation_refuses_unknown_fields():
    """The validators are not vacuous: a misspelt field fails each of them."""
    deployment = json.loads(json.dumps(of_kind(render("cpu"), "Deployment")[TRAIN]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    scaled = json.loads(json.dumps(of_kind(render("cpu"), "ScaledObject")[SCALED["ingest"]]))
    scaled["spec"]["maxReplicas"] = 3
    schema = json.loads((K8S / "schemas" / KEDA_SCHEMAS["ScaledObject"]).read_text())
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(scaled))


def test_secret_template_validates_and_is_not_rendered():
    template = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    _k8s_validate(template)
    assert template["metadata"]["name"] == SECRET
    assert set(template["stringData"]) >= SECRET_KEYS
    assert all("REPLACE_ME" in value or "example.invalid" in value for value in template["stringData"].values())
    for overlay in OVERLAYS:
        assert not of_kind(render(overlay), "Secret"), "an apply would overwrite the real credentials"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_non_root_limited_and_probed(overlay):
    docs = render(overlay)
    for name, spec in pod_specs(docs).items():
        pod_context = spec.get("securityContext", {})
        assert pod_context.get("runAsNonRoot") is True and pod_context.get("runAsUser") == 10001, name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            where = f"{name}/{container['name']}"
            context = container.get("securityContext", {})
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("readOnlyRootFilesystem") is True, where
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: no emptyDir on /tmp"
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{where}: {part}"
            if name.startswith("Deployment/"):
                assert "readinessProbe" in container and "livenessProbe" in container, where
            # the Secret is referenced, never inlined
            assert {"secretRef": {"name": SECRET}} in container.get("envFrom", []), where
            for env in container.get("env", []):
                assert env["name"] not in SECRET_KEYS, f"{where}: {env['name']} inlined"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_scraping_use_what_the_processes_serve(overlay):
    """Every pod is probed over HTTP where its process serves the probes: /readyz (the doctor's checks) for
    readiness, /healthz (no I/O) for liveness; the ecg-intake processes on ECG_INTAKE_METRICS_PORT, the review app
    on its own port; and its annotations tell Prometheus that port and /metrics."""
    from worker.review.probes import PUBLIC_PATHS

    assert set(PUBLIC_PATHS) == {"/metrics", "/healthz", "/readyz"}
    docs = render(overlay)
    config = of_kind(docs, "ConfigMap")["ecg-intake-config"]["data"]
    metrics_port = Settings(metrics_port=config["ECG_INTAKE_METRICS_PORT"]).metrics_port  # read as the app reads it
    assert metrics_port > 0 and config["ECG_INTAKE_METRICS_HOST"] == "0.0.0.0"
    assert config["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")  # the pod's own emptyDir, not the shared volume
    for name, doc in of_kind(docs, "Deployment").items():
        pod = doc["spec"]["template"]
        container = pod["spec"]["containers"][0]
        args = container["args"]
        if args[0] == "review":
            served_on, port = "http", int(args[args.index("--port") + 1])
        else:
            served_on, port = "metrics", metrics_port
        assert {"name": served_on, "containerPort": port} in container["ports"], name
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": served_on}, name
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": served_on}, name
        assert container.get("startupProbe", {"httpGet": {"path": "/healthz"}})["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["timeoutSeconds"] >= 5, name  # a broker check may wait 3 s
        assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                                                  "prometheus.io/path": "/metrics"}, name
    receiver = of_kind(docs, "Deployment")["ecg-intake-receiver"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "dicom", "containerPort": Settings().receive_port} in receiver["ports"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_train_and_beat_run_once(overlay):
    docs = render(overlay)
    train = of_kind(docs, "Deployment")[TRAIN]
    assert train["spec"]["replicas"] == 1
    assert train["spec"]["strategy"] == {"type": "Recreate"}
    assert "--beat" in train["spec"]["template"]["spec"]["containers"][0]["args"]
    beats = [n for n, d in of_kind(docs, "Deployment").items()
             if "--beat" in d["spec"]["template"]["spec"]["containers"][0].get("args", [])]
    assert beats == [TRAIN]
    assert TRAIN not in {s["spec"]["scaleTargetRef"]["name"] for s in of_kind(docs, "ScaledObject").values()}
    assert of_kind(docs, "Deployment")["ecg-intake-watcher"]["spec"]["replicas"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_each_queue_on_its_redis_list(overlay):
    docs = render(overlay)
    deployments = of_kind(docs, "Deployment")
    auths = of_kind(docs, "TriggerAuthentication")
    scaled = of_kind(docs, "ScaledObject")
    assert set(SCALED) <= set(QUEUES) and "train" in QUEUES
    assert "global_keyprefix" not in create_celery(Settings(broker_url="redis://redis:6379/0"),
                                                   with_tasks=False).conf.broker_transport_options
    by_target = {s["spec"]["scaleTargetRef"]["name"]: s for s in scaled.values()}
    assert set(by_target) == set(SCALED.values())
    for queue, target in SCALED.items():
        assert queue in {route["queue"] for route in TASK_ROUTES.values()}
        obj = by_target[target]
        spec = obj["spec"]
        assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment" and target in deployments
        worker_args = deployments[target]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert worker_args[worker_args.index("--queues") + 1] == queue, f"{target} does not consume {queue}"
        assert "replicas" not in deployments[target]["spec"], f"{target}: replicas would fight KEDA"
        assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"] and spec["cooldownPeriod"] > 0
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "redis"
        assert set(trigger["metadata"]) <= REDIS_SCALER_KEYS, set(trigger["metadata"]) - REDIS_SCALER_KEYS
        assert trigger["metadata"]["listName"] == redis_list_name(queue)
        assert int(trigger["metadata"]["listLength"]) > 0
        auth = auths[trigger["authenticationRef"]["name"]]
        refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
        assert "address" in refs or "host" in refs
        assert all(ref["name"] == SECRET for ref in refs.values())
    pdbs = {tuple(sorted(budget["spec"]["selector"]["matchLabels"].items()))
            for budget in of_kind(docs, "PodDisruptionBudget").values()}
    for name in [*SCALED.values(), "ecg-intake-review"]:
        labels = deployments[name]["spec"]["selector"]["matchLabels"]
        assert tuple(sorted(labels.items())) in pdbs, f"{name}: no PodDisruptionBudget"


def test_gpu_overlay_puts_inference_on_a_gpu():
    cpu, gpu = render("cpu"), render("gpu")

    def infer(docs: list[dict]) -> tuple[dict, dict]:
        deployment = of_kind(docs, "Deployment")[INFER]
        return deployment["spec"]["template"]["spec"], of_kind(docs, "ScaledObject")[INFER]["spec"]

    (cpu_pod, cpu_scale), (gpu_pod, gpu_scale) = infer(cpu), infer(gpu)
    cpu_c, gpu_c = cpu_pod["containers"][0], gpu_pod["containers"][0]
    assert "nvidia.com/gpu" not in cpu_c["resources"].get("limits", {})
    assert gpu_c["resources"]["limits"]["nvidia.com/gpu"] == 1
    engines = {e["name"]: e.get("value") for e in gpu_c["env"]}
    assert engines["ECG_INTAKE_ENGINE"] in ("cuda", "tensorrt", "auto")
    assert {e["name"]: e.get("value") for e in cpu_c["env"]}["ECG_INTAKE_ENGINE"] == "onnx"
    assert gpu_pod.get("nodeSelector") and any(t.get("key") == "nvidia.com/gpu" for t in gpu_pod["tolerations"])
    assert gpu_c["image"] == "ecg-intake-gpu:latest" and cpu_c["image"] == "ecg-intake:latest"
    assert gpu_scale["maxReplicaCount"] != cpu_scale["maxReplicaCount"]
    # every other pod keeps the CPU image and no GPU
    for docs in (cpu, gpu):
        for name, spec in pod_specs(docs).items():
            if name != f"Deployment/{INFER}":
                for container in spec["containers"]:
                    assert container["image"] == "ecg-intake:latest", name
                    assert "nvidia.com/gpu" not in container["resources"].get("limits", {}), name
