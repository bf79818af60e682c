"""The Helm chart: lints, renders with real Helm for every supported switch, and every object is valid
Kubernetes 1.30 (strict schemas) that follows the project's security and exposure rules."""
from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from .helpers import (
    CHART,
    KUBE_VERSION,
    RELEASE,
    SECRET_SENTINELS,
    Rendered,
    deep_merge,
    helm,
    load_gke_values,
)

kubernetes_validate = pytest.importorskip("kubernetes_validate")

HTTP_SERVICES = ["gateway", "ingest", "retriever", "explainer", "als"]
EXTERNAL = {"secrets": SECRET_SENTINELS}
BUNDLED = {
    "postgresql": {"enabled": True, "auth": {"password": "pg-pass"}},
    "kafka": {"enabled": True},
    "redis": {"enabled": True, "auth": {"password": "redis-pass"}},
}
HPA_ON = {svc: {"autoscaling": {"enabled": True}} for svc in HTTP_SERVICES}
INGRESS_ON = {"ingress": {"enabled": True, "host": "recsys.example.com"}}
KEDA_ON = {"profilerWorker": {"autoscaling": {"type": "keda", "keda": {"redisAddress": "10.1.2.4:6379"}}}}
QUEUE_HPA_ON = {"profilerWorker": {"autoscaling": {"type": "hpa"}}}
SPARK_K8S = {"alsTraining": {"spark": {"master": "k8s://https://kubernetes.default.svc"}}}
DASHBOARD_ON = {"dashboard": {"enabled": True}}

# The matrix every structural test runs over: (id, values).
MATRIX: list[tuple[str, dict[str, Any]]] = [
    ("defaults", {}),
    ("gke", load_gke_values()),
    ("external-deps", EXTERNAL),
    ("bundled-deps", BUNDLED),
    ("existing-secret", {"secrets": {"existingSecret": "recsys-prod"}}),
    ("hpa-on", deep_merge(EXTERNAL, HPA_ON)),
    ("ingress-on", deep_merge(EXTERNAL, INGRESS_ON)),
    ("keda-on", deep_merge(EXTERNAL, KEDA_ON)),
    ("queue-hpa-on", deep_merge(EXTERNAL, QUEUE_HPA_ON)),
    ("spark-on-k8s", deep_merge(EXTERNAL, SPARK_K8S)),
    ("gcs-persistence", {"persistence": {"type": "gcs", "gcs": {"bucket": "recsys-state"}}}),
    ("no-persistence", {"persistence": {"enabled": False}, "networkPolicy": {"enabled": False}}),
    ("dashboard-on", deep_merge(EXTERNAL, DASHBOARD_ON)),
    ("everything-on", deep_merge(deep_merge(deep_merge(BUNDLED, HPA_ON), INGRESS_ON),
                                 deep_merge(deep_merge(KEDA_ON, SPARK_K8S), DASHBOARD_ON))),
]
MATRIX_IDS = [name for name, _ in MATRIX]


@pytest.fixture(params=MATRIX, ids=MATRIX_IDS)
def rendered(request: pytest.FixtureRequest, render) -> Rendered:
    return render(request.param[1])


def containers_of(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod.get("initContainers", [])) + list(pod["containers"])


# ---------------------------------------------------------------- lint


@pytest.mark.parametrize("values", [{}, load_gke_values(), BUNDLED], ids=["defaults", "gke", "bundled"])
def test_lint_has_no_errors(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, kube_version=f"v{KUBE_VERSION}")
    errors = [m for m in report["messages"] if m["severity"] >= 3]
    assert report["total_charts_linted"] == 1
    assert not errors, errors


def test_strict_lint_only_notes_the_unfetched_bundled_charts() -> None:
    """Offline there is no `helm dependency build`; that is the one warning strict lint may raise."""
    report = helm.lint(CHART, {}, strict=True, kube_version=f"v{KUBE_VERSION}")
    warnings = [m["error"] for m in report["messages"] if m["severity"] >= 2]
    assert all("missing these dependencies" in w for w in warnings), warnings


def test_bundled_dependencies_are_pinned_and_switchable() -> None:
    deps = {d["name"]: d for d in helm.Chart.load(CHART).metadata["dependencies"]}
    assert set(deps) == {"postgresql", "kafka", "redis"}
    for name, dep in deps.items():
        assert dep["condition"] == f"{name}.enabled"
        assert dep["version"].count(".") == 2 and not any(c in dep["version"] for c in "^~*x><"), dep
        assert dep["repository"].startswith("oci://registry-1.docker.io/bitnamicharts")
    listed = {d["name"]: d["status"] for d in helm.dependency_list(CHART)}
    assert set(listed) == set(deps)


def test_values_schema_rejects_bad_values(render) -> None:
    chart = helm.Chart.load(CHART)
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"profilerWorker": {"autoscaling": {"type": "sometimes"}}})
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"gateway": {"replicas": "two"}})
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"persistence": {"type": "nfs"}})
    chart.validate_schema(load_gke_values())


# ---------------------------------------------------------------- every object is valid Kubernetes 1.30


_VALID: set[str] = set()  # objects already validated (many repeat across the matrix)


def test_every_object_validates_against_kubernetes_schemas(rendered: Rendered) -> None:
    assert rendered.objects
    for obj in rendered.objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            # A CRD: no upstream schema; its shape is asserted in test_keda_scaled_object.
            continue
        key = json.dumps(obj, sort_keys=True)
        if key in _VALID:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {e.message}")
        _VALID.add(key)


def test_every_container_is_non_root_read_only_and_bounded(rendered: Rendered) -> None:
    pods = list(rendered.pod_specs())
    assert len(pods) >= 10
    for where, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == 10001, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in containers_of(pod):
            sc = c["securityContext"]
            label = f"{where}:{c['name']}"
            assert sc["runAsNonRoot"] is True, label
            assert sc["allowPrivilegeEscalation"] is False, label
            assert sc["readOnlyRootFilesystem"] is True, label
            assert sc["capabilities"]["drop"] == ["ALL"], label
            assert "add" not in sc["capabilities"], label
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], label
            assert c["resources"]["limits"]["memory"], label
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            if c["name"] != "cloud-sql-proxy":
                assert "/tmp" in mounts, f"{label}: a read-only root needs a writable /tmp"


def test_http_containers_probe_healthz_and_readyz(rendered: Rendered) -> None:
    deployments = {d["metadata"]["name"]: d for d in rendered.of_kind("Deployment")}
    for svc in HTTP_SERVICES:
        pod = deployments[f"{RELEASE}-{svc}"]["spec"]["template"]["spec"]
        (main,) = [c for c in pod["containers"] if c["name"] == svc]
        assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert main["livenessProbe"]["httpGet"]["port"] == "http"
        assert main["args"][:2] == ["serve", svc]
        assert any(p["name"] == "http" for p in main["ports"])
    # Every container that opens a port has probes.
    for where, pod in rendered.pod_specs():
        for c in containers_of(pod):
            if any(p["name"] in {"http", "proxy-health"} for p in c.get("ports", [])):
                assert c.get("livenessProbe") and c.get("readinessProbe"), f"{where}:{c['name']}"


def test_workloads_run_the_right_command_in_their_service_image(rendered: Rendered) -> None:
    expected = {
        "ingest-raw-consumer": ("recsys-ingest", ["consume", "ingest-raw"]),
        "retriever-indexer": ("recsys-retriever", ["consume", "retriever-indexer"]),
        "profiler-trigger": ("recsys-profiler", ["consume", "profiler-trigger"]),
        "als-trigger": ("recsys-als", ["consume", "als-trigger"]),
        "profiler-worker": ("recsys-profiler", ["worker", "profiler"]),
        "explainer-worker": ("recsys-explainer", ["worker", "explainer"]),
        "als-worker": ("recsys-als", ["worker", "als"]),
        "als-beat": ("recsys-als", ["worker", "als", "--beat"]),
    }
    for component, (image, args) in expected.items():
        dep = rendered.get("Deployment", f"{RELEASE}-{component}")
        (main,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == component]
        assert f"/{image}:" in main["image"], (component, main["image"])
        assert main["args"][: len(args)] == args, (component, main["args"])
    beat = rendered.get("Deployment", f"{RELEASE}-als-beat")
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"


def test_settings_come_from_the_configmap_and_the_secret(rendered: Rendered) -> None:
    config = rendered.get("ConfigMap", f"{RELEASE}-config")["data"]
    assert config["RECSYS_RETRIEVER_URL"] == f"http://{RELEASE}-retriever:8002"
    assert config["RECSYS_HOME"] == "/var/lib/recsys"
    secret_name = rendered.values.get("secrets", {}).get("existingSecret") or f"{RELEASE}-secrets"
    for where, pod in rendered.pod_specs():
        if where.startswith("Job/"):
            continue
        for c in pod["containers"]:
            refs = {(k, v["name"]) for e in c["envFrom"] for k, v in e.items()}
            assert ("configMapRef", f"{RELEASE}-config") in refs, where
            assert ("secretRef", secret_name) in refs, where


# ---------------------------------------------------------------- secrets


def _decoded_secret(rendered: Rendered, name: str) -> dict[str, str]:
    data = rendered.get("Secret", name)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _sentinel_strings() -> list[str]:
    out: list[str] = []
    for v in SECRET_SENTINELS.values():
        out.extend(v if isinstance(v, list) else [v])
    return out


def test_secret_values_never_reach_a_configmap(render) -> None:
    inline = deep_merge(EXTERNAL, {"secrets": {"existingSecret": ""}})
    rendered = render(deep_merge(load_gke_values(), inline))
    secret = _decoded_secret(rendered, f"{RELEASE}-secrets")
    assert secret["RECSYS_DATABASE_URL"] == SECRET_SENTINELS["databaseUrl"]
    assert secret["RECSYS_API_KEYS"] == "api-key-one-SENTINEL,api-key-two-SENTINEL"
    assert secret["RECSYS_KAFKA_SASL_PASSWORD"] == SECRET_SENTINELS["kafkaSaslPassword"]
    for cm in rendered.of_kind("ConfigMap"):
        text = repr(cm)
        for sentinel in _sentinel_strings():
            assert sentinel not in text, f"ConfigMap {cm['metadata']['name']} leaks {sentinel}"
        assert not any("PASSWORD" in k or k.endswith(("_URL", "KEY", "KEYS", "TOKEN")) and "SERVICE" in k
                       for k in cm.get("data", {})), cm["metadata"]["name"]
    for key in ("RECSYS_DATABASE_URL", "RECSYS_CELERY_BROKER_URL", "RECSYS_ADMIN_KEY", "RECSYS_API_KEYS"):
        for cm in rendered.of_kind("ConfigMap"):
            assert key not in cm.get("data", {}), (cm["metadata"]["name"], key)
    # Nothing secret is spelled out in any pod spec either (they use envFrom/secretKeyRef).
    for where, pod in rendered.pod_specs():
        for sentinel in _sentinel_strings():
            assert sentinel not in repr(pod), where


def test_production_keys_are_always_in_the_secret(render) -> None:
    """The services refuse to start in production without write and admin keys: keys not given are
    generated at install (kept across upgrades by reading the live Secret back), given ones are used."""
    generated = _decoded_secret(render({}), f"{RELEASE}-secrets")
    assert len(generated["RECSYS_API_KEYS"]) == 40 and generated["RECSYS_API_KEYS"].isalnum()
    assert len(generated["RECSYS_ADMIN_KEY"]) == 40
    assert generated["RECSYS_ADMIN_KEY"] != generated["RECSYS_API_KEYS"]
    assert "RECSYS_READ_KEYS" not in generated
    keys = {"apiKeys": ["w1", "w2"], "adminKey": "adm", "readKeys": ["r1", "r2"]}
    given = _decoded_secret(render({"secrets": keys}), f"{RELEASE}-secrets")
    assert (given["RECSYS_API_KEYS"], given["RECSYS_ADMIN_KEY"], given["RECSYS_READ_KEYS"]) == ("w1,w2", "adm", "r1,r2")


def test_existing_secret_is_referenced_not_rendered(render) -> None:
    rendered = render({"secrets": {"existingSecret": "recsys-prod"}})
    assert not rendered.of_kind("Secret")
    job = rendered.get("Job", f"{RELEASE}-migrations")
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RECSYS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "recsys-prod"


def test_bundled_dependencies_wire_urls_into_the_secret(render) -> None:
    rendered = render(BUNDLED)
    secret = _decoded_secret(rendered, f"{RELEASE}-secrets")
    assert secret["RECSYS_DATABASE_URL"] == f"postgresql+psycopg://recsys:pg-pass@{RELEASE}-postgresql:5432/recsys"
    assert secret["RECSYS_CELERY_BROKER_URL"] == f"redis://:redis-pass@{RELEASE}-redis-master:6379/0"
    config = rendered.get("ConfigMap", f"{RELEASE}-config")["data"]
    assert config["RECSYS_KAFKA_BOOTSTRAP"] == f"{RELEASE}-kafka:9092"


def test_bundled_postgres_requires_a_password(render) -> None:
    with pytest.raises(helm.HelmError, match="postgresql.auth.password"):
        render({"postgresql": {"enabled": True}})


# ---------------------------------------------------------------- migrations


def test_migration_job_is_a_pre_install_pre_upgrade_hook(render) -> None:
    rendered = render(EXTERNAL)
    job = rendered.get("Job", f"{RELEASE}-migrations")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in ann["helm.sh/hook-delete-policy"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]
    # The Job cannot read the release Secret (not created yet): its hook copy exists with a lower weight.
    hook_secret = rendered.get("Secret", f"{RELEASE}-migrations")
    assert hook_secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    hook_weight = int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert hook_weight < int(ann["helm.sh/hook-weight"])
    db_url = _decoded_secret(rendered, f"{RELEASE}-migrations")["RECSYS_DATABASE_URL"]
    assert db_url == SECRET_SENTINELS["databaseUrl"]


def test_migrations_wait_for_a_bundled_database(render) -> None:
    job = render(BUNDLED).get("Job", f"{RELEASE}-migrations")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


# ---------------------------------------------------------------- GPU profiler worker


def test_profiler_worker_requests_a_gpu_on_the_gpu_pool(rendered: Rendered) -> None:
    dep = rendered.get("Deployment", f"{RELEASE}-profiler-worker")
    pod = dep["spec"]["template"]["spec"]
    (main,) = pod["containers"]
    assert int(main["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert "cloud.google.com/gke-accelerator" in pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in pod["tolerations"])
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["RECSYS_DEVICE"] == "cuda"
    # CPU-only pods stay off the GPU pool.
    for name in ("gateway", "profiler-trigger"):
        other = rendered.get("Deployment", f"{RELEASE}-{name}")["spec"]["template"]["spec"]
        assert "cloud.google.com/gke-accelerator" not in other.get("nodeSelector", {})
        assert all("nvidia.com/gpu" not in c["resources"].get("limits", {}) for c in other["containers"])


def test_keda_scaled_object(render) -> None:
    plain = render(EXTERNAL)
    assert not [o for o in plain.objects if o["apiVersion"].startswith("keda.sh/")], "KEDA must be opt-in"
    rendered = render(deep_merge(EXTERNAL, KEDA_ON))
    (so,) = rendered.of_kind("ScaledObject")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-profiler-worker"
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == "profiler"
    assert trigger["metadata"]["address"] == "10.1.2.4:6379"
    assert so["spec"]["minReplicaCount"] == 0
    # KEDA owns the replica count.
    assert "replicas" not in rendered.get("Deployment", f"{RELEASE}-profiler-worker")["spec"]


def test_queue_length_hpa_on_an_external_metric(render) -> None:
    rendered = render(deep_merge(EXTERNAL, QUEUE_HPA_ON))
    hpa = rendered.get("HorizontalPodAutoscaler", f"{RELEASE}-profiler-worker")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert hpa["spec"]["minReplicas"] >= 1
    assert "replicas" not in rendered.get("Deployment", f"{RELEASE}-profiler-worker")["spec"]


# ---------------------------------------------------------------- HPA, PDB, ingress


def test_hpa_switch(render) -> None:
    off = render(EXTERNAL)
    assert not off.of_kind("HorizontalPodAutoscaler")
    for svc in HTTP_SERVICES:
        assert off.get("Deployment", f"{RELEASE}-{svc}")["spec"]["replicas"] >= 1
    on = render(deep_merge(EXTERNAL, HPA_ON))
    names = {h["metadata"]["name"] for h in on.of_kind("HorizontalPodAutoscaler")}
    assert names == {f"{RELEASE}-{svc}" for svc in HTTP_SERVICES}
    for svc in HTTP_SERVICES:
        assert "replicas" not in on.get("Deployment", f"{RELEASE}-{svc}")["spec"], svc
        hpa = on.get("HorizontalPodAutoscaler", f"{RELEASE}-{svc}")
        assert hpa["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-{svc}"


def test_every_http_service_has_a_pdb_and_a_service(rendered: Rendered) -> None:
    for svc in HTTP_SERVICES:
        pdb = rendered.get("PodDisruptionBudget", f"{RELEASE}-{svc}")
        dep = rendered.get("Deployment", f"{RELEASE}-{svc}")
        assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
        service = rendered.get("Service", f"{RELEASE}-{svc}")
        assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_ingress_switch(render) -> None:
    assert not render(EXTERNAL).of_kind("Ingress")
    (ing,) = render(deep_merge(EXTERNAL, INGRESS_ON)).of_kind("Ingress")
    assert ing["spec"]["ingressClassName"] == "gce"
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == f"{RELEASE}-gateway"


# ---------------------------------------------------------------- network exposure


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    want = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in want.items())


def test_network_policies_open_only_the_gateway(render) -> None:
    rendered = render(EXTERNAL)
    policies = rendered.of_kind("NetworkPolicy")
    open_to_all = [p["metadata"]["name"] for p in policies
                   if any("from" not in rule for rule in p["spec"].get("ingress", []))]
    assert open_to_all == [f"{RELEASE}-gateway"]
    # Every pod is covered by a policy.
    for where, pod_owner in ((o["metadata"]["name"], o) for o in rendered.of_kind("Deployment")):
        labels = pod_owner["spec"]["template"]["metadata"]["labels"]
        assert any(_selects(p, labels) for p in policies), f"{where} has no NetworkPolicy"
    gateway_peer = {"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "recsys", "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "gateway"}}}
    explainer_peer = {"podSelector": {"matchLabels": {**gateway_peer["podSelector"]["matchLabels"],
                                                      "app.kubernetes.io/component": "explainer"}}}
    worker_peer = {"podSelector": {"matchLabels": {**gateway_peer["podSelector"]["matchLabels"],
                                                   "app.kubernetes.io/component": "explainer-worker"}}}
    # the explainer worker also calls the retriever: the candidates whose reasons and re-ranks it
    # precomputes (the explainer too, when it runs the LLM itself)
    callers = {"retriever": [gateway_peer, explainer_peer, worker_peer], "explainer": [gateway_peer],
               "als": [gateway_peer]}
    for svc in ("retriever", "explainer", "als"):
        policy = rendered.get("NetworkPolicy", f"{RELEASE}-{svc}")
        app_rule, *metrics_rules = policy["spec"]["ingress"]
        assert app_rule["from"] == callers[svc], svc
        for rule in metrics_rules:
            assert all("namespaceSelector" in peer for peer in rule["from"]), svc
    # Consumers and workers accept nothing.
    for name in ("ingest-raw-consumer", "retriever-indexer", "profiler-trigger", "profiler-worker",
                 "explainer-worker", "als-trigger", "als-worker"):
        assert rendered.get("NetworkPolicy", f"{RELEASE}-{name}")["spec"]["ingress"] == [], name


def test_spark_executors_may_reach_their_driver_only_on_k8s_master(render) -> None:
    rendered = render(deep_merge(EXTERNAL, SPARK_K8S))
    (rule,) = rendered.get("NetworkPolicy", f"{RELEASE}-als-training")["spec"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"] == {"recsys-spark-driver": RELEASE}
    assert {p["port"] for p in rule["ports"]} == {7078, 7079}


# ---------------------------------------------------------------- ALS CronJob and Spark


def test_als_cronjob_schedule_and_command(render) -> None:
    default = render(EXTERNAL).get("CronJob", f"{RELEASE}-als-training")
    assert default["spec"]["schedule"] == "0 3 * * *"
    assert default["spec"]["concurrencyPolicy"] == "Forbid"
    every_six_hours = {"alsTraining": {"schedule": "15 */6 * * *", "crossValidate": True}}
    custom = render(deep_merge(EXTERNAL, every_six_hours))
    cron = custom.get("CronJob", f"{RELEASE}-als-training")
    assert cron["spec"]["schedule"] == "15 */6 * * *"
    (main,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert main["args"] == ["train-als", "--cv"]
    assert "/recsys-als:" in main["image"]


def test_spark_master_local_by_default_and_kubernetes_with_rbac(render) -> None:
    local = render(EXTERNAL)
    conf = local.get("ConfigMap", f"{RELEASE}-spark")["data"]["spark-defaults.conf"]
    assert "spark.master                     local[*]" in conf
    assert not local.of_kind("Role")
    k8s = render(deep_merge(EXTERNAL, SPARK_K8S))
    conf = k8s.get("ConfigMap", f"{RELEASE}-spark")["data"]["spark-defaults.conf"]
    assert "k8s://https://kubernetes.default.svc" in conf
    assert f"spark.kubernetes.authenticate.driver.serviceAccountName {RELEASE}-spark" in conf
    role = k8s.get("Role", f"{RELEASE}-spark")
    assert "pods" in role["rules"][0]["resources"] and "create" in role["rules"][0]["verbs"]
    binding = k8s.get("RoleBinding", f"{RELEASE}-spark")
    assert binding["subjects"][0]["name"] == f"{RELEASE}-spark"
    pod = k8s.get("CronJob", f"{RELEASE}-als-training")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == f"{RELEASE}-spark" and pod["automountServiceAccountToken"] is True
    # Nothing else gets an API token.
    gateway = k8s.get("Deployment", f"{RELEASE}-gateway")["spec"]["template"]["spec"]
    assert gateway["automountServiceAccountToken"] is False


# ---------------------------------------------------------------- persistence


def test_rwo_state_volume_keeps_its_pods_together(render) -> None:
    rendered = render(EXTERNAL)
    pvc = rendered.get("PersistentVolumeClaim", f"{RELEASE}-state")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    for name in ("retriever", "retriever-indexer", "als-worker"):
        pod = rendered.get("Deployment", f"{RELEASE}-{name}")["spec"]["template"]["spec"]
        assert {"name": "state", "persistentVolumeClaim": {"claimName": f"{RELEASE}-state"}} in pod["volumes"]
        assert pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"], name
    rwx = render(deep_merge(EXTERNAL, {"persistence": {"pvc": {"accessMode": "ReadWriteMany"}}}))
    assert "affinity" not in rwx.get("Deployment", f"{RELEASE}-retriever")["spec"]["template"]["spec"]


def test_gcs_persistence_mounts_the_bucket_with_gcsfuse(render) -> None:
    rendered = render({"persistence": {"type": "gcs", "gcs": {"bucket": "recsys-state"}}})
    assert not rendered.of_kind("PersistentVolumeClaim")
    dep = rendered.get("Deployment", f"{RELEASE}-retriever")
    (state,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "state"]
    assert state["csi"]["driver"] == "gcsfuse.csi.storage.gke.io"
    assert state["csi"]["volumeAttributes"]["bucketName"] == "recsys-state"
    assert dep["spec"]["template"]["metadata"]["annotations"]["gke-gcsfuse/volumes"] == "true"


# ---------------------------------------------------------------- the GKE example


def test_gke_example(render) -> None:
    values = load_gke_values()
    rendered = render(values)
    sa = rendered.get("ServiceAccount", f"{RELEASE}")
    assert "iam.gke.io/gcp-service-account" in sa["metadata"]["annotations"]
    profiler = rendered.get("Deployment", f"{RELEASE}-profiler-worker")["spec"]["template"]["spec"]
    assert profiler["nodeSelector"]["cloud.google.com/gke-accelerator"] in {"nvidia-l4", "nvidia-tesla-t4"}
    # the LLM runs in the workers on the GPU pool; the explainer that serves requests needs no GPU
    worker = rendered.get("Deployment", f"{RELEASE}-explainer-worker")["spec"]["template"]["spec"]
    assert worker["nodeSelector"]["cloud.google.com/gke-accelerator"] in {"nvidia-l4", "nvidia-tesla-t4"}
    assert worker["containers"][-1]["resources"]["limits"]["nvidia.com/gpu"] == 1
    serving = rendered.get("Deployment", f"{RELEASE}-explainer")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in serving["containers"][-1]["resources"].get("limits", {})
    # Cloud SQL Auth Proxy runs as a native sidecar wherever the database is used.
    for where, pod in rendered.pod_specs():
        names = [c["name"] for c in pod.get("initContainers", [])]
        assert "cloud-sql-proxy" in names, where
        proxy = next(c for c in pod["initContainers"] if c["name"] == "cloud-sql-proxy")
        assert proxy["restartPolicy"] == "Always"
    assert rendered.of_kind("Ingress")
    assert not rendered.of_kind("Secret"), "the GKE example uses an existing Secret (Secret Manager)"


def test_spark_executor_pod_template_is_a_valid_non_root_pod(render) -> None:
    import yaml

    rendered = render(deep_merge(EXTERNAL, SPARK_K8S))
    text = rendered.get("ConfigMap", f"{RELEASE}-spark")["data"]["executor-pod-template.yaml"]
    pod = yaml.safe_load(text)
    kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    (executor,) = pod["spec"]["containers"]
    assert executor["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # Driver and executors share the checkpoint directory under RECSYS_HOME.
    assert {"name": "state", "mountPath": "/var/lib/recsys"} in executor["volumeMounts"]
    cron = rendered.get("CronJob", f"{RELEASE}-als-training")
    (main,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["RECSYS_SPARK_MASTER"] == "k8s://https://kubernetes.default.svc"


# ---------------------------------------------------------------- dashboard


def _peer(component: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "recsys", "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": component}}}


def test_dashboard_is_off_by_default(render) -> None:
    rendered = render(EXTERNAL)
    names = [o["metadata"]["name"] for o in rendered.objects]
    assert not [n for n in names if "dashboard" in n], names


def test_dashboard_when_on_runs_its_image_behind_a_closed_network_policy(render) -> None:
    rendered = render(deep_merge(deep_merge(EXTERNAL, DASHBOARD_ON), INGRESS_ON))
    dep = rendered.get("Deployment", f"{RELEASE}-dashboard")
    (main,) = dep["spec"]["template"]["spec"]["containers"]
    assert "/recsys-dashboard:" in main["image"]
    assert main["args"][:2] == ["serve", "dashboard"] and "8005" in main["args"]
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    svc = rendered.get("Service", f"{RELEASE}-dashboard")
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["port"] == 8005
    assert rendered.get("ConfigMap", f"{RELEASE}-config")["data"]["RECSYS_DASHBOARD_URL"] == (
        f"http://{RELEASE}-dashboard:8005")

    labels = dep["spec"]["template"]["metadata"]["labels"]
    policies = rendered.of_kind("NetworkPolicy")
    selecting = [p["metadata"]["name"] for p in policies if _selects(p, labels)]
    assert selecting == [f"{RELEASE}-dashboard"]  # in particular not the gateway's open policy
    rules = rendered.get("NetworkPolicy", f"{RELEASE}-dashboard")["spec"]["ingress"]
    # only the metrics scrapers (a namespace selector); nobody else until dashboard.allowFrom says so
    assert rules and all("from" in r and all("namespaceSelector" in peer for peer in r["from"]) for r in rules)
    open_to_all = [p["metadata"]["name"] for p in policies
                   if any("from" not in rule for rule in p["spec"].get("ingress", []))]
    assert open_to_all == [f"{RELEASE}-gateway"]
    # The public Ingress routes to the gateway only.
    for ing in rendered.of_kind("Ingress"):
        backends = [p["backend"]["service"]["name"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]]
        assert f"{RELEASE}-dashboard" not in backends
    # The dashboard reads the other services like a client: each admits it.
    for name in ("ingest", "retriever", "explainer", "als"):
        app_rule = rendered.get("NetworkPolicy", f"{RELEASE}-{name}")["spec"]["ingress"][0]
        assert _peer("dashboard") in app_rule["from"], name


def test_dashboard_network_policy_admits_only_the_configured_peers(render) -> None:
    ops = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}
    closed = render(deep_merge(EXTERNAL, {"dashboard": {"enabled": True}, "networkPolicy": {"metricsFrom": []}}))
    assert closed.get("NetworkPolicy", f"{RELEASE}-dashboard")["spec"]["ingress"] == []
    opened = render(deep_merge(EXTERNAL, {"dashboard": {"enabled": True, "allowFrom": [ops]}}))
    first = opened.get("NetworkPolicy", f"{RELEASE}-dashboard")["spec"]["ingress"][0]
    assert first["from"] == [ops]



def test_the_gateway_cache_fits_its_memory_limit(rendered: Rendered) -> None:
    """Answers are computed ahead for every user with a profile, so the gateway's cache fills: the chart
    bounds it per uvicorn worker (about 4 KB an answer) well inside the container's memory limit."""
    deployment = rendered.get("Deployment", f"{RELEASE}-gateway")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    size = int(env["RECSYS_GATEWAY_CACHE_SIZE"])
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    args = container["args"]
    workers = int(args[args.index("--workers") + 1])
    assert workers * size * 4 * 1024 < 0.5 * int(limit[:-2]) * 2**20
