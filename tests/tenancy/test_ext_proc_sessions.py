"""Envoy's external processor routes with the session's floor from the tenant state, which
only an answered Cascade raised."""

from __future__ import annotations

import json
from pathlib import Path

from tests.api.envoy_filter import ExtProcFilter, Headers
from tests.helpers import make_settings, running_server
from tests.tenancy.serving import CHEAP, EASY, MID, TOP
from tierroute.providers.scripted import Reply, ScriptedProvider
from tierroute.v1 import tierroute_pb2 as pb


def _upstream(headers: Headers, body: bytes) -> tuple[int, Headers, bytes]:
    return 200, {"content-type": "application/json"}, b'{"type":"message"}'


async def test_the_processor_keeps_a_session_on_the_tier_that_answered_in_it(
    tmp_path: Path,
) -> None:
    """After a Cascade of session chat-1 escalated to mid, an easy Messages request of that
    session is routed to mid; one of another session goes cheap."""
    settings = make_settings(
        {"TIERROUTE_TENANCY_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}"}
    )
    provider = ScriptedProvider(
        answers={CHEAP: [Reply.answer("wrong")], MID: [Reply.answer("right")]},
        judges={MID: [Reply.verdict(False, ["wrong"])], TOP: [Reply.verdict(True)]},
    )
    body = json.dumps(
        {"model": TOP, "max_tokens": 64, "messages": [{"role": "user", "content": "2+2?"}]}
    ).encode()
    async with running_server(settings, scorer=EASY, provider=provider) as s:
        await s.stub.Cascade(
            pb.CascadeRequest(
                query="hard one",
                session_id="chat-1",
                judge_mode=pb.JUDGE_MODE_ALWAYS,
                speculation=pb.SPECULATION_MODE_OFF,
            )
        )
        envoy = ExtProcFilter(s.channel)
        same = await envoy.request(
            "POST",
            "/v1/messages",
            _upstream,
            body=body,
            headers={"x-tierroute-session-id": "chat-1"},
        )
        other = await envoy.request(
            "POST",
            "/v1/messages",
            _upstream,
            body=body,
            headers={"x-tierroute-session-id": "chat-2"},
        )
    assert same.client_headers["x-tierroute-tier"] == "mid"
    assert other.client_headers["x-tierroute-tier"] == "cheap"
