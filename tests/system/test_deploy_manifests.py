"""The container image and deployment manifests agree with the service and with each other.

No container engine or cluster runs here, so these tests read the files: every YAML
document parses, probes speak gRPC to the health service, ports match the service's
defaults, everything runs as non-root, and the ConfigMap builds valid settings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tierroute.api.security import TokenStore
from tierroute.api.server import SERVICE_NAME
from tierroute.settings import HttpConfig, ServerConfig, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ENVOY = DEPLOY / "envoy"
GRPC_PORT = ServerConfig().port
METRICS_PORT = 9464
HTTP_PORT = HttpConfig().port
IMAGE_UID = 10001


def _documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def _resources() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in [*sorted(K8S.glob("*.yaml")), ENVOY / "deployment.yaml"]:
        if path.name != "kustomization.yaml":
            docs.extend(_documents(path))
    return docs


def _one(kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in _resources() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _server_pod() -> dict[str, Any]:
    spec: dict[str, Any] = _one("Deployment", "tierroute")["spec"]["template"]["spec"]
    return spec


def _server_container() -> dict[str, Any]:
    [container] = _server_pod()["containers"]
    return dict(container)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def _final_stage() -> str:
    # The final stage is everything after the last FROM.
    return re.split(r"(?m)^FROM ", _dockerfile())[-1]


def _envoy() -> dict[str, Any]:
    [config] = _documents(ENVOY / "envoy.yaml")
    return config


def _envoy_routes() -> list[dict[str, Any]]:
    # The gRPC balancer's listener (the other one is the Anthropic API's).
    [listener] = [x for x in _envoy()["static_resources"]["listeners"] if x["name"] == "grpc"]
    [manager] = listener["filter_chains"][0]["filters"]
    [host] = manager["typed_config"]["route_config"]["virtual_hosts"]
    routes: list[dict[str, Any]] = host["routes"]
    return routes


def _envoy_cluster() -> dict[str, Any]:
    [cluster] = [c for c in _envoy()["static_resources"]["clusters"] if c["name"] == "tierroute"]
    return dict(cluster)


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_parses(path: Path) -> None:
    """Every YAML file under deploy/ parses, and each document is a mapping."""
    docs = _documents(path)
    assert docs
    assert all(isinstance(d, dict) for d in docs)


def test_every_kubernetes_resource_is_named_and_typed() -> None:
    """Every Kubernetes document has apiVersion, kind and metadata.name."""
    for doc in _resources():
        assert doc["apiVersion"]
        assert doc["kind"]
        assert doc["metadata"]["name"]


@pytest.mark.parametrize("directory", [K8S, ENVOY], ids=lambda p: p.name)
def test_kustomization_lists_only_existing_files(directory: Path) -> None:
    """Each kustomization names files that exist, and every manifest beside it is listed."""
    [kustomization] = _documents(directory / "kustomization.yaml")
    listed = set(kustomization.get("resources", []))
    for kind in ("configMapGenerator", "secretGenerator"):
        for generator in kustomization.get(kind, []):
            listed.update(generator["files"])
    assert all((directory / name).is_file() for name in listed)
    present = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    assert present <= listed


def test_probes_call_the_grpc_health_service_on_the_grpc_port() -> None:
    """Startup, readiness and liveness probes use the native grpc type on the service port."""
    container = _server_container()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(container[probe]) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}
        assert container[probe]["grpc"]["port"] == GRPC_PORT


def test_readiness_checks_the_tierroute_service_by_name() -> None:
    """Readiness asks for tierroute.v1.TierRouter, which goes NOT_SERVING while draining."""
    assert _server_container()["readinessProbe"]["grpc"]["service"] == SERVICE_NAME


def test_container_ports_match_the_service_defaults() -> None:
    """The gRPC and HTTP ports are the server's defaults and the metrics port the image's."""
    assert _ports(_server_container()) == {
        "grpc": GRPC_PORT,
        "http": HTTP_PORT,
        "metrics": METRICS_PORT,
    }


def test_services_route_to_the_named_grpc_port() -> None:
    """Both Services select the server pods and send port 50051 to the `grpc` port."""
    labels = _one("Deployment", "tierroute")["spec"]["template"]["metadata"]["labels"]
    for name in ("tierroute", "tierroute-headless"):
        spec = _one("Service", name)["spec"]
        assert spec["selector"].items() <= labels.items()
        grpc_port = next(p for p in spec["ports"] if p["name"] == "grpc")
        assert (grpc_port["port"], grpc_port["targetPort"]) == (GRPC_PORT, "grpc")


def test_headless_service_publishes_every_ready_pod() -> None:
    """The headless Service has no cluster IP and publishes ready pods only."""
    spec = _one("Service", "tierroute-headless")["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["publishNotReadyAddresses"] is False


def test_server_runs_as_the_image_non_root_user_with_a_read_only_root() -> None:
    """Pod and container run as uid 10001, non-root, read-only root, no privileges."""
    pod, container = _server_pod(), _server_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_every_pod_runs_as_non_root() -> None:
    """Every workload in the manifests (server, database, collector, Jaeger, Envoy) is non-root."""
    workloads = [d for d in _resources() if d["kind"] in ("Deployment", "StatefulSet")]
    assert len(workloads) >= 5
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_working_directory_is_a_writable_volume() -> None:
    """With a read-only root, the image's working directory is mounted from an emptyDir."""
    mounts = {m["mountPath"]: m["name"] for m in _server_container()["volumeMounts"]}
    workdir = re.search(r"(?m)^WORKDIR (\S+)", _final_stage())
    assert workdir is not None
    volume = mounts[workdir.group(1)]
    [spec] = [v for v in _server_pod()["volumes"] if v["name"] == volume]
    assert "emptyDir" in spec


def test_configmap_builds_valid_settings(tmp_path: Path) -> None:
    """The mounted tierroute.toml loads into Settings, with tiers and the default port."""
    toml = _one("ConfigMap", "tierroute-config")["data"]["tierroute.toml"]
    path = tmp_path / "tierroute.toml"
    path.write_text(toml, encoding="utf-8")
    settings = Settings.from_env({"TIERROUTE_CONFIG": str(path)})
    assert settings.server.port == GRPC_PORT
    assert settings.telemetry.prometheus_port == METRICS_PORT
    assert len(settings.tiers) >= 2


def test_config_env_points_into_the_configmap_mount() -> None:
    """TIERROUTE_CONFIG names the ConfigMap's file inside the mounted config volume."""
    container = _server_container()
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in _server_pod()["volumes"]}
    config = Path(_env(container)["TIERROUTE_CONFIG"])
    [volume] = [
        n for n, v in volumes.items() if v.get("configMap", {}).get("name") == "tierroute-config"
    ]
    assert config.parent == Path(mounts[volume])
    assert config.name in _one("ConfigMap", "tierroute-config")["data"]


def test_placeholder_tokens_file_loads(tmp_path: Path) -> None:
    """The auth Secret's placeholder tokens file is valid (it authorises nobody)."""
    path = tmp_path / "tokens.toml"
    path.write_text(_one("Secret", "tierroute-auth")["stringData"]["tokens.toml"])
    assert len(TokenStore.load(path)) == 0


def test_secrets_hold_only_placeholders() -> None:
    """Every Secret value in the repository is an obvious placeholder, never a real credential."""
    for secret in (d for d in _resources() if d["kind"] == "Secret"):
        for key, value in secret.get("stringData", {}).items():
            if key != "tokens.toml":
                assert "REPLACE-ME" in value, key


def test_query_log_url_points_at_the_postgres_service() -> None:
    """TIERROUTE_DB_URL is a postgresql:// URL to the StatefulSet's Service, and is referenced."""
    url = _one("Secret", "tierroute-secrets")["stringData"]["TIERROUTE_DB_URL"]
    assert url.startswith("postgresql://")
    assert "@tierroute-postgres:5432/" in url
    refs = [e["secretRef"]["name"] for e in _server_container()["envFrom"]]
    assert "tierroute-secrets" in refs
    assert _one("StatefulSet", "tierroute-postgres")["spec"]["serviceName"] == "tierroute-postgres"


def test_otel_endpoint_is_the_collector_service() -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT names the collector Service's OTLP gRPC port."""
    endpoint = _env(_server_container())["OTEL_EXPORTER_OTLP_ENDPOINT"]
    host, port = endpoint.removeprefix("http://").split(":")
    service = _one("Service", host)
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]


def test_hpa_scales_the_server_deployment() -> None:
    """The HorizontalPodAutoscaler targets the tierroute Deployment with at least two pods."""
    spec = _one("HorizontalPodAutoscaler", "tierroute")["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "tierroute",
    }
    assert spec["minReplicas"] >= 2


def test_termination_grace_covers_the_server_drain() -> None:
    """The pod's grace period outlasts preStop plus the server's configured drain."""
    toml = _one("ConfigMap", "tierroute-config")["data"]["tierroute.toml"]
    drain = float(re.search(r"grace_period_s = ([\d.]+)", toml).group(1))  # type: ignore[union-attr]
    pause = _server_container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert _server_pod()["terminationGracePeriodSeconds"] > drain + pause


def test_envoy_balances_per_call_over_http2_round_robin() -> None:
    """Envoy's cluster uses round robin over HTTP/2 to every pod of the headless Service."""
    cluster = _envoy_cluster()
    assert cluster["lb_policy"] == "ROUND_ROBIN"
    assert cluster["type"] == "STRICT_DNS"
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in options["explicit_http_config"]
    [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert address["address"].startswith("tierroute-headless.")
    assert address["port_value"] == GRPC_PORT


def test_envoy_health_checks_the_tierroute_service_over_grpc() -> None:
    """Envoy's active health check is a gRPC health check of tierroute.v1.TierRouter."""
    [check] = _envoy_cluster()["health_checks"]
    assert check["grpc_health_check"]["service_name"] == SERVICE_NAME


def test_envoy_retries_route_only() -> None:
    """Only the Route path carries a retry policy; Cascade is never retried by Envoy."""
    route, catch_all = _envoy_routes()
    assert route["match"]["path"] == "/tierroute.v1.TierRouter/Route"
    assert "unavailable" in route["route"]["retry_policy"]["retry_on"]
    assert "retry_policy" not in catch_all["route"]
    for r in (route, catch_all):
        # Envoy's default 15 s route timeout would cut long Cascade calls short.
        assert r["route"]["timeout"] == "0s"


def test_envoy_admin_listens_on_loopback_only() -> None:
    """Envoy's admin interface is not reachable from outside the pod."""
    assert _envoy()["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_dockerfile_final_stage_runs_as_the_non_root_user() -> None:
    """The final stage switches to uid 10001, the uid the manifests expect."""
    users = re.findall(r"(?m)^USER (\S+)", _final_stage())
    assert users == [f"{IMAGE_UID}:{IMAGE_UID}"]


def test_dockerfile_exposes_the_grpc_http_and_metrics_ports() -> None:
    """EXPOSE names the gRPC, Messages API and Prometheus ports."""
    [exposed] = re.findall(r"(?m)^EXPOSE (.+)$", _final_stage())
    assert {int(p) for p in exposed.split()} == {GRPC_PORT, HTTP_PORT, METRICS_PORT}


def test_dockerfile_health_check_uses_the_python_probe() -> None:
    """HEALTHCHECK runs tierroute.healthprobe against the gRPC port, not a downloaded binary."""
    match = re.search(r"(?ms)^HEALTHCHECK .*?CMD (\[.*?\])$", _final_stage())
    assert match is not None
    command = yaml.safe_load(match.group(1))
    assert command[:3] == ["python", "-m", "tierroute.healthprobe"]
    assert f"127.0.0.1:{GRPC_PORT}" in command


def test_dockerfile_entrypoint_serves_on_all_interfaces() -> None:
    """The entrypoint is `tierroute serve --host 0.0.0.0`."""
    match = re.search(r"(?m)^ENTRYPOINT (\[.*\])$", _final_stage())
    assert match is not None
    assert yaml.safe_load(match.group(1)) == ["tierroute", "serve", "--host", "0.0.0.0"]


def test_dockerfile_installs_no_training_or_dev_extras() -> None:
    """The builder installs the package without extras, and the final stage installs nothing."""
    installs = [line for line in _dockerfile().splitlines() if "pip install" in line]
    assert installs
    # An extra would appear as `.[train]` or `tierroute[dev]`.
    assert not any("[" in line for line in installs)
    assert "pip install" not in _final_stage()
    assert "apt-get" not in _final_stage()


def test_dockerfile_final_stage_copies_the_model_bundle() -> None:
    """The final stage carries the model bundle and points TIERROUTE_MODEL_DIR at it."""
    final = _final_stage()
    copied = re.search(r"(?m)^COPY model_export/bundle (\S+)$", final)
    assert copied is not None
    assert f"TIERROUTE_MODEL_DIR={copied.group(1)}" in final


def test_the_service_sends_the_http_port_to_the_pods_http_port() -> None:
    """The `tierroute` Service publishes the Messages API endpoint on its default port."""
    spec = _one("Service", "tierroute")["spec"]
    http = next(p for p in spec["ports"] if p["name"] == "http")
    assert (http["port"], http["targetPort"]) == (HTTP_PORT, "http")
