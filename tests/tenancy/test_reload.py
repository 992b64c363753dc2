"""The tokens file and the tenants' limits reload on change or on SIGHUP (the server's
`reload_files`) without dropping calls; a malformed file keeps the old one and says why."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import grpc
import pytest
from grpc import aio

from tests.helpers import make_settings, running_server
from tests.tenancy.serving import CHEAP, EASY, cheap_call
from tierroute.api.security import bearer_metadata, hash_token
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.tenancy import WatchedFile
from tierroute.v1 import tierroute_pb2 as pb

OLD, NEW = "old-token-for-acme", "new-token-for-acme"
IN_FLIGHT = 8


def _tokens(path: Path, *tokens: str) -> None:
    path.write_text(json.dumps({"tenants": {"acme": [hash_token(t) for t in tokens]}}))


async def test_tokens_reload_under_load_drops_no_call(tmp_path, caplog) -> None:
    """Eight Cascades in flight on the old token finish OK across two reloads: one that
    swaps in a new token (the old one now refused, the new one served) and a malformed
    file, which keeps the new tokens and logs why."""
    tokens = tmp_path / "tokens.json"
    _tokens(tokens, OLD)
    settings = make_settings(
        {"TIERROUTE_AUTH_TOKENS_FILE": str(tokens), "TIERROUTE_TENANCY_RELOAD_POLL_S": "0"}
    )
    gate = asyncio.Event()
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("held", gate=gate)] * IN_FLIGHT + [Reply.answer("new")]}
    )
    async with running_server(settings, scorer=EASY, provider=provider) as s:
        held = [
            asyncio.ensure_future(s.stub.Cascade(cheap_call(""), metadata=bearer_metadata(OLD)))
            for _ in range(IN_FLIGHT)
        ]
        await provider.wait_for_calls(IN_FLIGHT)
        _tokens(tokens, NEW)
        s.server.reload_files()
        with pytest.raises(aio.AioRpcError) as old:
            await s.stub.Route(pb.RouteRequest(query="q"), metadata=bearer_metadata(OLD))
        tokens.write_text("{ not json")
        with caplog.at_level(logging.WARNING, logger="tierroute.tenancy.reload"):
            s.server.reload_files()
        fresh = await s.stub.Cascade(cheap_call(""), metadata=bearer_metadata(NEW))
        gate.set()
        finished = await asyncio.gather(*held)
    assert old.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert fresh.answer == "new"
    assert [r.answer for r in finished] == ["held"] * IN_FLIGHT
    assert "auth.tokens_file not reloaded, keeping the previous contents" in caplog.text
    assert "does not parse" in caplog.text


async def test_tenant_limits_reload_without_a_restart(tmp_path) -> None:
    """Raising a tenant's requests_per_minute in the tenants file takes effect on reload."""
    limits = tmp_path / "tenants.toml"
    limits.write_text("[tenants.acme]\nrequests_per_minute = 1\n")
    settings = make_settings(
        {"TIERROUTE_TENANCY_TENANTS_FILE": str(limits), "TIERROUTE_TENANCY_RELOAD_POLL_S": "0"}
    )
    request = pb.RouteRequest(query="q", tenant_id="acme")
    async with running_server(settings, scorer=EASY) as s:
        await s.stub.Route(request)
        with pytest.raises(aio.AioRpcError):
            await s.stub.Route(request)
        limits.write_text("[tenants.acme]\nrequests_per_minute = 5\n")
        s.server.reload_files()
        again = await s.stub.Route(request)
    assert again.tier.name == "cheap"


def test_a_changed_file_is_noticed_and_an_unchanged_one_is_not(tmp_path) -> None:
    """The poll reloads a file only when its identity (size, mtime, inode) changed."""
    path = tmp_path / "limits.toml"
    path.write_text("a")
    loaded: list[str] = []
    watched = WatchedFile(path, "tenancy.tenants_file", lambda p: p.read_text(), loaded.append)
    assert not watched.check()
    path.write_text("bb")
    os.utime(path, ns=(1, 1))
    assert watched.check()
    assert not watched.check()
    assert loaded == ["bb"]
