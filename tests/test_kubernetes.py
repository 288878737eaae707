"""The deployment files for several replicas, checked offline: the Kubernetes manifests as
`kubectl kustomize` renders them, against the Kubernetes API schemas (kubernetes-validate bundles
them) and for the properties a replica needs to be scaled, drained and restarted without losing a
request; and docker-compose.yml's replicas profile as the compose CLI reads it. (Running the replicas
for real is tests/test_replicas.py's job: it needs a Docker engine.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.metrics import Metrics
from service.settings import Settings

from conftest import REPO

KUBERNETES = REPO / "deploy" / "kubernetes"
OVERLAYS = ["base", "overlays/queue-depth", "overlays/gpu", "overlays/prometheus-operator"]
# The oldest Kubernetes release the manifests are meant for, and the newest the schemas know.
VERSIONS = ["1.27", kubernetes_validate.utils.latest_version()]
# Kinds that come from a custom resource definition: no schema in Kubernetes' own.
CUSTOM = {"ServiceMonitor"}
SERVER_LABELS = {"app.kubernetes.io/name": "w2v-asr", "app.kubernetes.io/component": "server"}


def render(folder: str) -> list[dict]:
    """The objects `kubectl kustomize` makes of a kustomization under deploy/kubernetes."""
    if shutil.which("kubectl") is None:
        pytest.skip("needs kubectl (its `kubectl kustomize` renders the manifests)")
    done = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES / folder)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [item for item in yaml.safe_load_all(done.stdout) if item]


def only(objects: list[dict], kind: str) -> dict:
    (found,) = [item for item in objects if item["kind"] == kind]
    return found


def server_container(objects: list[dict]) -> dict:
    (container,) = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def environment(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def quantity(value) -> float:
    """A Kubernetes quantity (2, "500m", "1Gi") as a number of units."""
    text = str(value)
    suffixes = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, scale in suffixes.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)


@pytest.mark.parametrize("folder", [".", *OVERLAYS])
def test_manifests_match_the_kubernetes_schemas(folder):
    objects = render(folder)
    assert objects
    for item in objects:
        if item["kind"] in CUSTOM:
            continue
        for version in VERSIONS:  # strict: a misspelt or misplaced field is an error, not ignored
            kubernetes_validate.validate(item, version, strict=True)


def test_the_schemas_catch_a_misplaced_field():
    """The validation above could pass by validating nothing: a field one level off fails."""
    deployment = only(render("base"), "Deployment")
    deployment["spec"]["template"]["spec"]["readOnlyRootFilesystem"] = True  # belongs to a container
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_the_adapter_rule_is_a_valid_configmap_serving_the_overlays_metric():
    (config,) = yaml.safe_load_all((KUBERNETES / "prometheus-adapter" / "adapter-config.yaml").read_text())
    for version in VERSIONS:
        kubernetes_validate.validate(config, version, strict=True)
    (rule,) = yaml.safe_load(config["data"]["config.yaml"])["rules"]
    series = re.match(r"(\w+)\{", rule["seriesQuery"]).group(1)
    assert series in Metrics().registry._names_to_collectors  # the server exports it
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    served = rule["name"]["as"]
    hpa = only(render("overlays/queue-depth"), "HorizontalPodAutoscaler")
    pods = [metric["pods"] for metric in hpa["spec"]["metrics"] if metric["type"] == "Pods"]
    assert [metric["metric"]["name"] for metric in pods] == [served]
    assert {metric["resource"]["name"] for metric in hpa["spec"]["metrics"] if metric["type"] == "Resource"} == {"cpu"}


def test_the_deployment_is_probed_on_the_servers_own_routes():
    container = server_container(render("base"))
    port = {item["name"]: item["containerPort"] for item in container["ports"]}["http"]
    env = environment(container)
    assert int(env["ASR_PORT"]) == port and env["ASR_HOST"] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    # Loading is slow and /health answers during it: the startup probe waits on /ready, long enough.
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/ready"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    assert container["livenessProbe"]["failureThreshold"] >= 2  # one slow answer does not restart it
    # Every ASR_* variable is a setting the server knows (a typo would be ignored silently).
    known = {f"ASR_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known, sorted(set(env) - known)


def test_a_replica_drains_before_it_is_killed():
    deployment = only(render("base"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = server_container([deployment])
    grace = float(
        environment(container).get(
            "ASR_SHUTDOWN_GRACE_SECONDS", Settings.model_fields["shutdown_grace_seconds"].default
        )
    )
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain = float(command[1])
    assert drain >= 5  # endpoints and node proxies need a few seconds to forget the pod
    # Kubernetes counts preStop inside the termination grace: SIGTERM comes after the sleep.
    assert pod["terminationGracePeriodSeconds"] > drain + grace
    # Rolling updates add a replica before removing one; HPA owns the count.
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert "replicas" not in deployment["spec"]


def test_the_replica_runs_unprivileged_on_a_read_only_root():
    deployment = only(render("base"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = server_container([deployment])
    uid = int(re.search(r"useradd --system --uid (\d+)", (REPO / "Dockerfile").read_text()).group(1))
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    # What the server writes goes to emptyDir volumes: /tmp, and the caches the image points under ~/.cache.
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in container["volumeMounts"]}
    assert all("emptyDir" in volume for volume in mounts.values())
    image_env = dict(
        re.findall(
            r"(\w+)=(\S+)",
            re.search(r"ENV PATH=/opt/venv/bin:\$PATH (.*?)ASR_HOST", (REPO / "Dockerfile").read_text(), re.S).group(1),
        )
    )
    writes = ["/tmp", environment(container)["ASR_CACHE_DIR"], image_env["HF_HOME"], image_env["ASR_CACHE_DIR"]]
    for path in writes:
        assert any(path == mount or path.startswith(mount + "/") for mount in mounts), path


def test_resources_are_guaranteed_and_onnxruntime_uses_the_cpus_given():
    for folder in ("base", "overlays/gpu"):
        container = server_container(render(folder))
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert {"cpu", "memory"} <= set(requests)
        assert {name: quantity(value) for name, value in requests.items()} == {
            name: quantity(value) for name, value in limits.items()
        }, folder
        threads = int(environment(container)["ASR_THREADS"])
        assert 1 <= threads <= quantity(limits["cpu"]), folder  # 0 (one per node core) would overcommit
        assert quantity(requests["memory"]) >= 512 * 2**20


def test_service_pdb_hpa_and_scrape_target_the_replicas():
    objects = render("base")
    deployment = only(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == SERVER_LABELS and SERVER_LABELS.items() <= labels.items()
    service = only(objects, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]
    pdb = only(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = only(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    # A drain (the PDB's one pod) never leaves the service without a replica.
    assert (
        hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"]
        and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    )
    (cpu,) = hpa["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu" and 0 < cpu["resource"]["target"]["averageUtilization"] < 100
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    container = server_container(objects)
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]


def test_the_service_monitor_scrapes_the_service():
    objects = render("overlays/prometheus-operator")
    monitor, service = only(objects, "ServiceMonitor"), only(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]} and endpoint["path"] == "/metrics"


def test_the_gpu_overlay_asks_for_a_gpu_and_scales_on_the_queue():
    objects = render("overlays/gpu")
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    container = server_container(objects)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-gpu") and environment(container)["ASR_PROVIDER"] == "cuda"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # Still everything the base has: the patch changed the GPU settings, nothing else.
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready" and "preStop" in container["lifecycle"]
    metrics = only(objects, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert {metric["type"] for metric in metrics} == {"Resource", "Pods"}


# --- docker-compose.yml ---


def compose(*args: str) -> subprocess.CompletedProcess:
    """The compose CLI: `docker compose` (v2) where it is installed, else `docker-compose` (v1)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose"]
    else:
        pytest.skip("needs docker compose (v2) or docker-compose (v1) to read the compose files")
    return subprocess.run(
        [*command, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home())},
    )


@pytest.mark.parametrize("files", [[], ["-f", "docker-compose.yml", "-f", "docker-compose.gpu.yml"]])
def test_compose_files_are_valid_with_every_profile(files):
    for profiles in ([], ["--profile", "replicas"], ["--profile", "monitoring", "--profile", "tools"]):
        done = compose(*files, *profiles, "config", "-q")
        assert done.returncode == 0, done.stderr


def test_compose_replicas_sit_behind_the_balancer_and_one_server_stays_as_it_was():
    done = compose("--profile", "replicas", "config")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    single, replica, balancer = services["asr"], services["asr-replica"], services["balancer"]
    # `docker compose up` alone starts the one server, on its port, as before.
    assert "profiles" not in single and str(single["ports"][0].get("target", single["ports"][0])).endswith("8000")
    assert replica["profiles"] == balancer["profiles"] == ["replicas"]
    # Replicas publish no port (so any number fit); the balancer publishes one.
    assert "ports" not in replica and len(balancer["ports"]) == 1
    assert replica["image"] == single["image"] and replica["build"] == single["build"]
    assert {**single["environment"], "ASR_THREADS": replica["environment"]["ASR_THREADS"]} == replica["environment"]
    assert replica["scale"] >= 2
    host, port = balancer["environment"]["BALANCER_SERVERS"].split(":")
    image_port = re.search(r"ASR_PORT=(\d+)", (REPO / "Dockerfile").read_text()).group(1)
    assert host == "asr-replica" and port == image_port
    # Docker kills a replica only after the server's own shutdown grace has run out.
    grace = Settings.model_fields["shutdown_grace_seconds"].default
    assert seconds(replica["stop_grace_period"]) > grace
    assert balancer["build"]["context"].endswith("docker/balancer")


def seconds(duration) -> float:
    """A compose duration ("40s", "1m30s", or seconds as a number) in seconds."""
    if isinstance(duration, (int, float)):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(amount) * units[unit] for amount, unit in re.findall(r"([\d.]+)([hms])", duration))


def test_the_balancer_checks_readiness_and_retries_on_another_replica():
    config = (REPO / "docker" / "balancer" / "haproxy.cfg").read_text()
    lines = {line.strip() for line in config.splitlines() if line.strip() and not line.strip().startswith("#")}
    assert "http-check send meth GET uri /ready ver HTTP/1.1 hdr Host balancer" in lines
    assert "http-check expect status 200" in lines
    assert "option http-buffer-request" in lines and "option redispatch 1" in lines
    retry_on = next(line for line in lines if line.startswith("retry-on ")).split()[1:]
    assert {"conn-failure", "empty-response"} <= set(retry_on)
    assert any(line.startswith("server-template ") and "resolvers" not in line for line in lines)
    assert any(line.startswith("default-server ") and "resolvers docker" in line for line in lines)
    dockerfile = (REPO / "docker" / "balancer" / "Dockerfile").read_text()
    assert re.search(r"^FROM debian:bookworm-slim$", dockerfile, re.M) and "haproxy -c -f" in dockerfile
