"""deploy/envoy/envoy.yaml is a valid Envoy bootstrap that hands Anthropic API traffic to
tierroute's external processor in the processing mode the processor is built for.

Envoy cannot be installed here, so the file is read into `envoy.config.bootstrap.v3.Bootstrap`
with protobuf's json_format and Envoy's own protos (xds-protos, which `make install` puts
in .venv/xds-protos, apart from the serving dependencies whose protos it would shadow): an
unknown field, a misspelt enum value or a typed_config of an unknown type fails the parse.
The parse runs in a child process, the only one that puts xds-protos on its path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

from tests.api.envoy_filter import ExtProcFilter
from tierroute.api.dataplane.envoy.extensions.filters.http.ext_proc.v3 import (
    processing_mode_pb2 as mode_pb,
)
from tierroute.settings import ExtProcConfig, ServerConfig

ROOT = Path(__file__).resolve().parents[2]
ENVOY_YAML = ROOT / "deploy" / "envoy" / "envoy.yaml"
XDS_PROTOS = Path(os.environ.get("TIERROUTE_XDS_PROTOS", ROOT / ".venv" / "xds-protos"))
EXT_PROC = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"

# Imports every Envoy proto module, so each typed_config's type is known, then parses the
# YAML into a Bootstrap and prints it back as canonical JSON (enum names, defaults left out).
_PARSE = """
import importlib, json, pkgutil, sys
import envoy, yaml
from google.protobuf import json_format
for module in pkgutil.walk_packages(envoy.__path__, "envoy."):
    if module.name.endswith("_pb2"):
        importlib.import_module(module.name)
from envoy.config.bootstrap.v3 import bootstrap_pb2
with open(sys.argv[1], encoding="utf-8") as fh:
    bootstrap = json_format.ParseDict(yaml.safe_load(fh), bootstrap_pb2.Bootstrap())
print(json_format.MessageToJson(bootstrap, preserving_proto_field_name=True))
"""


def _run_parse(path: Path) -> subprocess.CompletedProcess[str]:
    assert (XDS_PROTOS / "envoy").is_dir(), f"{XDS_PROTOS} holds no xds-protos: run make install"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(XDS_PROTOS), *sys.path])}
    return subprocess.run(
        [sys.executable, "-c", _PARSE, str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def parse_bootstrap(path: Path) -> dict[str, Any]:
    """`path` parsed into Envoy's Bootstrap message, as canonical JSON; fails on any error."""
    done = _run_parse(path)
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


@cache
def _bootstrap() -> dict[str, Any]:
    return parse_bootstrap(ENVOY_YAML)


def _listener(name: str) -> dict[str, Any]:
    [listener] = [x for x in _bootstrap()["static_resources"]["listeners"] if x["name"] == name]
    return dict(listener)


def _cluster(name: str) -> dict[str, Any]:
    [cluster] = [c for c in _bootstrap()["static_resources"]["clusters"] if c["name"] == name]
    return dict(cluster)


def _anthropic_manager() -> dict[str, Any]:
    [manager] = _listener("anthropic")["filter_chains"][0]["filters"]
    return dict(manager["typed_config"])


def _ext_proc() -> dict[str, Any]:
    [ext_proc] = [f for f in _anthropic_manager()["http_filters"] if f["name"].endswith("ext_proc")]
    return dict(ext_proc["typed_config"])


def test_envoy_yaml_parses_as_a_bootstrap(tmp_path: Path) -> None:
    """The whole file is a Bootstrap: every field and typed_config is one Envoy knows."""
    assert {x["name"] for x in _bootstrap()["static_resources"]["listeners"]} == {
        "grpc",
        "anthropic",
    }
    broken = tmp_path / "envoy.yaml"
    broken.write_text(ENVOY_YAML.read_text().replace("request_body_mode:", "request_body_mod:"))
    done = _run_parse(broken)
    # The same parse refuses a misspelt field, so passing it means something.
    assert done.returncode != 0
    assert "request_body_mod" in done.stderr


def test_ext_proc_runs_before_the_router_and_calls_tierroute() -> None:
    """The Anthropic listener's filters are ext_proc then router; ext_proc's gRPC service is
    the tierroute cluster, which reaches the server's gRPC port over HTTP/2."""
    names = [f["name"] for f in _anthropic_manager()["http_filters"]]
    assert names == ["envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    [ext_proc] = [f for f in _anthropic_manager()["http_filters"] if f["name"] == names[0]]
    assert ext_proc["typed_config"]["@type"] == EXT_PROC
    assert _ext_proc()["grpc_service"]["envoy_grpc"]["cluster_name"] == "tierroute"
    cluster = _cluster("tierroute")
    [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"]["port_value"] == ServerConfig().port
    options = cluster["typed_extension_protocol_options"]
    assert "http2_protocol_options" in next(iter(options.values()))["explicit_http_config"]


def test_processing_mode_is_the_one_the_processor_is_built_for() -> None:
    """Headers sent, the body BUFFERED, response headers sent, nothing else; mode override
    allowed, as tests/api/envoy_filter.py drives the processor."""
    mode = _ext_proc()["processing_mode"]
    assert mode == {
        "request_header_mode": "SEND",
        "request_body_mode": "BUFFERED",
        "response_header_mode": "SEND",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }
    assert _ext_proc()["allow_mode_override"] is True
    # The tests' Envoy stand-in buffers bodies the same way by default.
    assert ExtProcFilter.__init__.__kwdefaults__["body_mode"] == mode_pb.ProcessingMode.BUFFERED


def test_envoy_fails_open_like_the_default_processor() -> None:
    """Envoy's failure_mode_allow agrees with the default ext_proc.failure_mode ("open")."""
    assert ExtProcConfig().failure_mode == "open"
    assert _ext_proc()["failure_mode_allow"] is True


def test_ext_proc_token_is_a_placeholder() -> None:
    """Envoy's bearer token for tierroute is a placeholder, never a real credential."""
    [metadata] = _ext_proc()["grpc_service"]["initial_metadata"]
    assert metadata["key"] == "authorization"
    assert metadata["value"].startswith("Bearer REPLACE-ME")


def test_requests_go_to_anthropic_over_tls() -> None:
    """The routed requests go to api.anthropic.com:443 with TLS checked against its name."""
    manager = _anthropic_manager()
    [host] = manager["route_config"]["virtual_hosts"]
    [route] = host["routes"]
    assert route["route"]["cluster"] == "anthropic"
    assert route["route"]["host_rewrite_literal"] == "api.anthropic.com"
    cluster = _cluster("anthropic")
    [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert (address["address"], address["port_value"]) == ("api.anthropic.com", 443)
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == "api.anthropic.com"
    [san] = tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
    assert san["matcher"]["exact"] == "api.anthropic.com"


def test_buffered_bodies_fit_in_one_grpc_message() -> None:
    """Envoy's body buffer stays below tierroute's gRPC receive limit, so a buffered body
    always fits in the ProcessingRequest that carries it."""
    limit = int(_listener("anthropic")["per_connection_buffer_limit_bytes"])
    assert limit < ServerConfig().max_receive_message_bytes
