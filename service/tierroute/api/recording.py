"""Turns each Route or Cascade call into a query-log record, success or failure.

The servicer calls these after the core has answered (or failed); building a record is
cheap and submitting it never blocks or raises, so logging stays off the critical path.
Records never hold answer text, and hold query text only when `querylog.store_text` is on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tierroute.cascade import CascadeResult
from tierroute.querylog import HopRecord, QueryRecord, hash_query
from tierroute.querylog.records import Kind, ValuePlanRecord
from tierroute.routing import CascadePlan, Decision, RouteQuery, query_type


def _base(
    *,
    kind: Kind,
    request_id: str,
    text: str,
    store_text: bool,
    tenant_id: str,
    session_id: str,
    metadata: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "kind": kind,
        "query_sha256": hash_query(text),
        "query_chars": len(text),
        "query_text": text if store_text else None,
        "tenant_id": tenant_id,
        "session_id": session_id,
        "metadata": dict(metadata),
    }


def _decision_fields(decision: Decision) -> dict[str, Any]:
    return {
        "strategy": decision.strategy,
        "rule": decision.rule,
        "scores": list(decision.scores),
        "chosen_tier": decision.tier.name,
        "model_version": decision.model_version,
        "decision_time_us": decision.decision_time_us,
        "estimated_cost_usd": decision.estimated_cost_usd,
        "query_type": decision.features.query_type,
        "familiarity": decision.familiarity,
        "unfamiliar": decision.unfamiliar,
    }


def _g6(value: float) -> float:
    # Six significant digits: the estimates' own precision, at a fraction of repr's length.
    return float(f"{value:.6g}")


def value_plan_record(plan: CascadePlan) -> ValuePlanRecord:
    """The value policy's estimates behind a plan, as the query log keeps them (no text)."""
    record: ValuePlanRecord = {
        "p_correct": [_g6(p) for p in plan.p_correct],
        "cost_usd": [_g6(c) for c in plan.cost_usd],
        "action": plan.index,
        "operating_point": plan.operating_point,
        "price_per_correct_usd": _g6(plan.price_per_correct_usd),
    }
    if plan.allowed is not None:
        record["allowed"] = list(plan.allowed)
    return record


def route_record(
    query: RouteQuery, decision: Decision, *, store_text: bool, status: str = "OK"
) -> QueryRecord:
    """The record of a successful Route call."""
    fields = _base(
        kind="route",
        request_id=query.request_id,
        text=query.text,
        store_text=store_text,
        tenant_id=query.tenant_id,
        session_id=query.session_id,
        metadata=query.metadata,
    )
    fields.update(_decision_fields(decision))
    fields["final_tier"] = decision.tier.name
    return QueryRecord(status=status, **fields)


def cascade_record(
    query: RouteQuery, result: CascadeResult, *, strategy: str, store_text: bool
) -> QueryRecord:
    """The record of a Cascade call that produced an answer."""
    fields = _base(
        kind="cascade",
        request_id=result.request_id,
        text=query.text,
        store_text=store_text,
        tenant_id=query.tenant_id,
        session_id=query.session_id,
        metadata=query.metadata,
    )
    if result.decision is not None:
        fields.update(_decision_fields(result.decision))
        if result.decision.plan is not None:
            fields["value_plan"] = value_plan_record(result.decision.plan)
    else:
        fields["query_type"] = query_type(query.text)
    fields["strategy"] = strategy or str(fields.get("strategy", ""))
    fields["chosen_tier"] = result.hops[0].tier if result.hops else result.tier.name
    hops: list[HopRecord] = [
        {
            "tier": h.tier,
            "model": h.model,
            "role": h.role,
            "outcome": h.outcome,
            "input_tokens": h.input_tokens,
            "output_tokens": h.output_tokens,
            "cost_usd": h.cost_usd,
            "latency_ms": h.latency_ms,
            "verdict": h.verdict or "",
            # Judge issues are free text that often quotes the question or the answer:
            # kept only when query text is opted in.
            "issues": list(h.issues) if store_text else [],
            "attempt": h.attempt,
            "speculative": h.speculative,
            "error_kind": h.error_kind,
            "cache_creation_input_tokens": h.cache_creation_input_tokens,
            "cache_read_input_tokens": h.cache_read_input_tokens,
        }
        for h in result.hops
    ]
    fields.update(
        final_tier=result.tier.name,
        hops=hops,
        total_cost_usd=result.total_cost_usd,
        total_latency_ms=result.total_latency_ms,
        escalated=result.escalated,
        escalation_reasons=[f"{n.code.value}: {n.detail}" for n in result.escalation_reasons],
        judge_status=result.judge_status,
        degraded=result.degraded,
        cache_creation_tokens=sum(h.cache_creation_input_tokens for h in result.hops),
        cache_read_tokens=sum(h.cache_read_input_tokens for h in result.hops),
        stop_reason=result.stop_reason,
    )
    return QueryRecord(**fields)


def failed_record(
    kind: Kind,
    *,
    request_id: str,
    texts: Sequence[str],
    status: str,
    store_text: bool,
    tenant_id: str = "",
    session_id: str = "",
) -> QueryRecord:
    """The record of a call that ended with an error status (no data is lost silently).

    The text is whatever the caller sent, bounded: a rejected 10 MB query is hashed, never
    stored, and at most its first 10,000 characters are kept even with store_text on.
    """
    text = texts[-1] if texts else ""
    fields = _base(
        kind=kind,
        request_id=request_id,
        text=text,
        store_text=False,
        tenant_id=tenant_id[:128],
        session_id=session_id[:128],
        metadata={},
    )
    if store_text:
        fields["query_text"] = text[:10_000]
    return QueryRecord(status=status, **fields)
