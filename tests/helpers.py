"""Test helpers: settings for tests, a real server on port 0 behind a real channel, a
hand-driven clock for the circuit breakers, copies of a model bundle under another version,
and numbered query-log records and their reading."""

from __future__ import annotations

import http.client
import json
import os
import shutil
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from grpc import aio

from tierroute.api.security import hash_token
from tierroute.api.server import TierRouteServer
from tierroute.querylog import QueryRecord, SqliteStore, Store
from tierroute.querylog.doubles import sample_record
from tierroute.routing.router import Scorer
from tierroute.settings import Settings
from tierroute.v1 import tierroute_pb2_grpc as pb_grpc


def make_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the bundled config plus `environ`, never the process environment.

    The query log is off unless the test turns it on, so no test writes into the checkout,
    and so is the HTTP endpoint, whose configured port is fixed (tests bind port 0).
    """
    return Settings.from_env(
        {"TIERROUTE_QUERYLOG_ENABLED": "false", "TIERROUTE_HTTP_PORT": "0", **(environ or {})}
    )


# The token of the tenant `acme` in `acme_tokens` files.
ACME_TOKEN = "acme-token"


def acme_tokens(directory: Path, token: str = ACME_TOKEN) -> Path:
    """A tokens file (`TIERROUTE_AUTH_TOKENS_FILE`) in `directory` giving `token` to `acme`."""
    path = directory / "tokens.json"
    path.write_text(json.dumps({"tenants": {"acme": [hash_token(token)]}}))
    return path


def postgres_or_skip() -> str:
    """The test PostgreSQL's URL (127.0.0.1:5432, database `test`); the calling test is
    skipped when it is unreachable, except under CI, where that fails it."""
    import pytest

    from tierroute.querylog.doubles import reachable_postgres_url

    url = reachable_postgres_url()
    if url is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs PostgreSQL at 127.0.0.1:5432 (database test)")
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    return url


def post_raw(
    url: str, path: str, body: str | bytes, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """POST `body` (JSON unless `headers` say otherwise) to `path` on the HTTP endpoint at
    `url` with the standard library, not an SDK; the status, headers and body text."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(
            "POST", path, body, {"content-type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def metric_points(reader: Any, name: str) -> list[tuple[dict[str, Any], Any]]:
    """(attributes, value) of each data point of the metric `name` that an OpenTelemetry
    in-memory metric reader has collected."""
    data = reader.get_metrics_data()
    assert data is not None
    return [
        (dict(p.attributes or {}), p.value)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points
    ]


@dataclass
class Running:
    """A started server and a stub on a channel to it."""

    server: TierRouteServer
    channel: aio.Channel
    stub: Any
    port: int

    @property
    def http_url(self) -> str:
        """The base URL of the server's Messages API endpoint (started with http=True)."""
        assert self.server.http_port, "start the server with running_server(http=True)"
        return f"http://127.0.0.1:{self.server.http_port}"


@asynccontextmanager
async def running_server(
    settings: Settings | None = None,
    *,
    scorer: Scorer | None = None,
    http: bool = False,
    **kwargs: Any,
) -> AsyncIterator[Running]:
    """Start the real server on 127.0.0.1:0 with the factory `tierroute serve` uses.

    Without an injected provider the server starts its own replay backend; unless the test
    says otherwise it serves synthetic answers only (no data file), which starts fast. With
    `http` the Messages API endpoint listens on a free port too (`Running.http_url`).
    """
    kwargs.setdefault("environ", {"TIERROUTE_DATA": "/nonexistent/tierroute-test-data"})
    server = TierRouteServer(settings or make_settings(), scorer=scorer, **kwargs)
    port = await server.start("127.0.0.1", 0, http_port=0 if http else None)
    channel = aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Running(server, channel, pb_grpc.TierRouterStub(channel), port)
    finally:
        await channel.close()
        await server.stop(0)


class FakeClock:
    """A clock that moves only when told to (the circuit breakers' injectable clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def numbered_records(prefix: str, n: int, start: int = 0) -> list[QueryRecord]:
    """n sample records with ids prefix-<i>, one second apart from T0."""
    return [
        sample_record(f"{prefix}-{i}", ts=T0 + timedelta(seconds=i))
        for i in range(start, start + n)
    ]


async def read_all(store: Store) -> list[QueryRecord]:
    """Every stored query record in insertion order, read in small pages; closes the store."""
    try:
        return [r async for r in store.iter_queries(page_size=7)]
    finally:
        await store.aclose()


async def stored_ids(path: Path) -> list[str]:
    """Request ids stored in the SQLite log at `path`, in insertion order."""
    return [r.request_id for r in await read_all(SqliteStore(path))]


def make_variant(bundle: Path, version: str, dest: Path) -> Path:
    """A copy of `bundle` that calls itself `version` (same model bytes, a loadable bundle)."""
    dest.mkdir(parents=True)
    shutil.copyfile(bundle / "model.onnx", dest / "model.onnx")
    metadata = json.loads((bundle / "metadata.json").read_text())
    thresholds = json.loads((bundle / "thresholds.json").read_text())
    metadata["model_version"] = thresholds["version"] = version
    (dest / "metadata.json").write_text(json.dumps(metadata))
    (dest / "thresholds.json").write_text(json.dumps(thresholds))
    return dest
