"""A worker's link to its group (api.workers.GroupLink), in process: health answers for the
whole group, and a sibling's announced model swap is followed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import running_server
from tierroute.api.workers import GROUP_FILE, GroupLink, worker_health_name

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _until_status(stub: health_pb2_grpc.HealthStub, service: str, status: int) -> None:
    """Until the health Watch stream of `service` reports `status`."""
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=service))
    try:
        async for reply in watch:
            if reply.status == status:
                return
    finally:
        watch.cancel()


async def test_health_is_serving_only_while_every_worker_is(tmp_path: Path) -> None:
    """One of two workers not ready: this worker reports the service NOT_SERVING; both: SERVING."""
    group = tmp_path / GROUP_FILE
    group.write_text(json.dumps({"workers": 2, "ready": [0], "stopping": False}))
    async with running_server() as running:
        link = GroupLink(running.server, 0, tmp_path)
        await link.start()
        stub = health_pb2_grpc.HealthStub(running.channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest())
            assert reply.status == NOT_SERVING
            other = await stub.Check(health_pb2.HealthCheckRequest(service=worker_health_name(1)))
            assert other.status == NOT_SERVING
            group.write_text(json.dumps({"workers": 2, "ready": [0, 1], "stopping": False}))
            await asyncio.wait_for(_until_status(stub, "", SERVING), 30)
            group.write_text(json.dumps({"workers": 2, "ready": [0, 1], "stopping": True}))
            await asyncio.wait_for(_until_status(stub, "", NOT_SERVING), 30)
        finally:
            await link.stop()
