"""A count_tokens request (`POST /v1/messages/count_tokens`) as what a provider counts.

The body is a Messages API request without `max_tokens` (Anthropic's count_tokens takes
`model`, `messages`, `system`, `tools` and `tool_choice`), checked by the Messages door's
conversion. A tier's model id is counted by that model. `tierroute` and `tierroute@NAME`
are counted by the model of the tier the Cascade would start on (the router's decision for
the request, as `Cascade` makes it), because that model reads the prompt first and is
billed for it whatever happens next: an escalation sends the same prompt to a model that
may count it differently, which the caller learns from `x-tierroute-tier` on the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tierroute.api import convert
from tierroute.api.http.messages import parse_request
from tierroute.errors import InvalidRequest
from tierroute.providers import AnswerParams, Message
from tierroute.routing import Router
from tierroute.settings import Settings, TierConfig

_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice"})


@dataclass(frozen=True)
class CountQuery:
    """What to count, and which tier's model counts it."""

    tier: TierConfig
    messages: list[Message]
    system: str | None
    params: AnswerParams


def count_query(
    body: dict[str, Any], settings: Settings, router: Router, operating_points: Sequence[str]
) -> CountQuery:
    """The request to count; InvalidRequest or NotFound naming what is wrong."""
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: count_tokens does not take this field")
    # The Messages door's conversion checks the rest; max_tokens is only needed to pass it.
    parsed = parse_request({**body, "max_tokens": 1}, settings, operating_points)
    query = convert.cascade_query(parsed.request, settings, {})
    if parsed.model.tier is not None:
        tier = settings.tier(parsed.model.tier)
    else:
        tier = router.decide(query.route, for_cascade=True).tier
    return CountQuery(
        tier=tier,
        messages=[*query.route.history, query.question_turn],
        system=query.system or None,
        params=query.params,
    )
