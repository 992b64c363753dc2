"""What the query log stores: one `QueryRecord` per Route or Cascade call, and feedback.

Records are plain frozen values built by the servicer; they hold query text only when
`querylog.store_text` is opted in, and answer text only on opt-in audit samples
(`querylog.audit_sample_rate`); the writer enforces both. The JSON form here is what the
spool file holds, so it round-trips every field exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired, TypedDict

Kind = Literal["route", "cascade"]

# Metadata of a shadow sample (`[shadow] sample_rate`): the tier, strategy, rule, model
# version and scores tierroute's policy would have chosen; the writer keeps the text of a
# record holding SHADOW_TIER while shadow mode is on.
SHADOW_PREFIX = "shadow."
SHADOW_TIER = "shadow.tier"


class ValuePlanRecord(TypedDict):
    """The value policy's estimates behind a planned Cascade, as logged (no text): per action
    (the bundle's `cascade.value.actions` order) P(correct) and expected cost in USD under
    the server's prices, the index of the action chosen, and the operating point whose price
    of a correct answer chose it. `tierroute adapt` re-solves operating points from these."""

    p_correct: list[float]
    cost_usd: list[float]
    action: int
    operating_point: str
    price_per_correct_usd: float
    # Which actions the plan could choose for this query (absent: all of them).
    allowed: NotRequired[list[bool]]


class HopRecord(TypedDict):
    """One model call of a cascade, as logged.

    Canonical values: role "answer" | "judge" | "probe"; outcome "ok" | "error" | "cancelled" |
    "skipped"; verdict "pass" | "fail" | "unavailable" | "" (not a judge hop). Readers also
    accept the proto enum names (`HOP_ROLE_ANSWER`, `JUDGE_VERDICT_PASS`, ...).
    """

    tier: str
    model: str
    role: str
    outcome: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    verdict: str
    issues: list[str]
    attempt: int
    speculative: bool
    error_kind: str
    # Prompt-cache input tokens (written, read), billed apart from input_tokens; rows
    # logged before prompt caching have none (read as 0).
    cache_creation_input_tokens: NotRequired[int]
    cache_read_input_tokens: NotRequired[int]


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def hash_query(text: str) -> str:
    """SHA-256 hex digest of the routed query text, UTF-8 encoded."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError("query log timestamps must be timezone-aware")
    return ts.astimezone(UTC)


@dataclass(frozen=True)
class QueryRecord:
    """Everything logged about one Route or Cascade call; answer text only on audit samples."""

    request_id: str
    kind: Kind
    query_sha256: str
    query_chars: int
    ts: datetime = field(default_factory=utc_now)
    tenant_id: str = ""
    session_id: str = ""
    # Only set when querylog.store_text is on; the writer clears it otherwise.
    query_text: str | None = None
    strategy: str = ""
    rule: str = ""
    scores: list[float] = field(default_factory=list)
    # The tier routing chose (the cascade's starting tier) and the tier that answered.
    chosen_tier: str = ""
    final_tier: str = ""
    model_version: str = ""
    decision_time_us: int = 0
    estimated_cost_usd: float = 0.0
    hops: list[HopRecord] = field(default_factory=list)
    total_cost_usd: float = 0.0
    total_latency_ms: float = 0.0
    escalated: bool = False
    escalation_reasons: list[str] = field(default_factory=list)
    judge_status: str = ""
    degraded: bool = False
    query_type: str = ""
    # The gRPC status code name the call ended with: "OK", "INVALID_ARGUMENT", ...
    status: str = "OK"
    metadata: dict[str, str] = field(default_factory=dict)
    # The answer, only on an audit sample (querylog.audit_sample_rate > 0, which also keeps
    # the question); the writer clears it otherwise.
    answer_text: str | None = None
    # Share of the query's words in the routing model's vocabulary: a number, never text.
    vocab_coverage: float | None = None
    # Prompt-cache input tokens of every hop, written and read; the answer's stop reason.
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    stop_reason: str = ""
    # The value policy's estimates when it planned this Cascade (None otherwise).
    value_plan: ValuePlanRecord | None = None
    # The routing model's familiarity signal for the query (0-1; None without it), and
    # whether it was below the model's threshold (reason UNFAMILIAR_QUERY).
    familiarity: float | None = None
    unfamiliar: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", _utc(self.ts))
        if not self.request_id:
            raise ValueError("a query record needs a request id")


@dataclass(frozen=True)
class FeedbackRecord:
    """A user's rating (1-5) or correctness flag against an earlier request."""

    request_id: str
    ts: datetime = field(default_factory=utc_now)
    rating: int | None = None
    correct: bool | None = None
    tenant_id: str = ""
    # Makes a retried batch idempotent: the same feedback is stored at most once.
    feedback_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", _utc(self.ts))
        if not self.request_id:
            raise ValueError("feedback needs a request id")


LogItem = QueryRecord | FeedbackRecord


def ts_text(ts: datetime) -> str:
    """One fixed-width ISO-8601 UTC form, so that text timestamps sort and compare as time."""
    return _utc(ts).isoformat(timespec="microseconds")


def parse_ts(value: datetime | str) -> datetime:
    """A UTC datetime from a stored timestamp (text in SQLite, a datetime in PostgreSQL)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return _utc(value)


def finite_json(value: Any) -> Any:
    """`value` with non-finite floats as None, since JSON columns cannot hold NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


# Built once: json.dumps with options builds a new encoder per call, which costs more
# than encoding a small record.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str, allow_nan=False)


def dumps(value: Any) -> str:
    """Compact JSON for stored columns and spool lines; unknown types become strings."""
    try:
        return _ENCODER.encode(value)
    except ValueError:
        # Rare: a NaN or infinity somewhere. Only then pay for the recursive rewrite.
        return _ENCODER.encode(finite_json(value))


def query_to_json(record: QueryRecord) -> dict[str, Any]:
    """The JSON-ready form of a query record (the spool line's payload)."""
    return {
        "request_id": record.request_id,
        "kind": record.kind,
        "ts": ts_text(record.ts),
        "tenant_id": record.tenant_id,
        "session_id": record.session_id,
        "query_sha256": record.query_sha256,
        "query_text": record.query_text,
        "query_chars": record.query_chars,
        "strategy": record.strategy,
        "rule": record.rule,
        "scores": list(record.scores),
        "chosen_tier": record.chosen_tier,
        "final_tier": record.final_tier,
        "model_version": record.model_version,
        "decision_time_us": record.decision_time_us,
        "estimated_cost_usd": record.estimated_cost_usd,
        "hops": [dict(h) for h in record.hops],
        "total_cost_usd": record.total_cost_usd,
        "total_latency_ms": record.total_latency_ms,
        "escalated": record.escalated,
        "escalation_reasons": list(record.escalation_reasons),
        "judge_status": record.judge_status,
        "degraded": record.degraded,
        "query_type": record.query_type,
        "status": record.status,
        "metadata": dict(record.metadata),
        "answer_text": record.answer_text,
        "vocab_coverage": record.vocab_coverage,
        "cache_creation_tokens": record.cache_creation_tokens,
        "cache_read_tokens": record.cache_read_tokens,
        "stop_reason": record.stop_reason,
        "value_plan": None if record.value_plan is None else dict(record.value_plan),
        "familiarity": record.familiarity,
        "unfamiliar": record.unfamiliar,
    }


def _float(value: Any) -> float:
    # NaN went through JSON as null; read it back as NaN rather than failing.
    return math.nan if value is None else float(value)


def query_from_json(data: Mapping[str, Any]) -> QueryRecord:
    """Rebuild a query record from `query_to_json` output or a stored row mapping."""
    text = data.get("query_text")
    answer = data.get("answer_text")
    coverage = data.get("vocab_coverage")
    familiarity = data.get("familiarity")
    return QueryRecord(
        request_id=str(data["request_id"]),
        kind="route" if data["kind"] == "route" else "cascade",
        ts=parse_ts(data["ts"]),
        tenant_id=str(data.get("tenant_id") or ""),
        session_id=str(data.get("session_id") or ""),
        query_sha256=str(data["query_sha256"]),
        query_text=None if text is None else str(text),
        query_chars=int(data.get("query_chars") or 0),
        strategy=str(data.get("strategy") or ""),
        rule=str(data.get("rule") or ""),
        scores=[_float(s) for s in _json_field(data.get("scores"), [])],
        chosen_tier=str(data.get("chosen_tier") or ""),
        final_tier=str(data.get("final_tier") or ""),
        model_version=str(data.get("model_version") or ""),
        decision_time_us=int(data.get("decision_time_us") or 0),
        estimated_cost_usd=_float(data.get("estimated_cost_usd")),
        hops=list(_json_field(data.get("hops"), [])),
        total_cost_usd=_float(data.get("total_cost_usd")),
        total_latency_ms=_float(data.get("total_latency_ms")),
        escalated=bool(data.get("escalated")),
        escalation_reasons=[str(r) for r in _json_field(data.get("escalation_reasons"), [])],
        judge_status=str(data.get("judge_status") or ""),
        degraded=bool(data.get("degraded")),
        query_type=str(data.get("query_type") or ""),
        status=str(data.get("status") or ""),
        metadata={str(k): str(v) for k, v in _json_field(data.get("metadata"), {}).items()},
        answer_text=None if answer is None else str(answer),
        vocab_coverage=None if coverage is None else float(coverage),
        cache_creation_tokens=int(data.get("cache_creation_tokens") or 0),
        cache_read_tokens=int(data.get("cache_read_tokens") or 0),
        stop_reason=str(data.get("stop_reason") or ""),
        value_plan=_value_plan(_json_field(data.get("value_plan"), None)),
        familiarity=None if familiarity is None else float(familiarity),
        unfamiliar=bool(data.get("unfamiliar")),
    )


def _value_plan(data: Any) -> ValuePlanRecord | None:
    """A logged value plan read back; None when absent or not of that shape."""
    if not isinstance(data, Mapping):
        return None
    try:
        plan: ValuePlanRecord = {
            "p_correct": [float(v) for v in data["p_correct"]],
            "cost_usd": [float(v) for v in data["cost_usd"]],
            "action": int(data["action"]),
            "operating_point": str(data.get("operating_point") or ""),
            "price_per_correct_usd": float(data.get("price_per_correct_usd") or 0.0),
        }
        if data.get("allowed") is not None:
            plan["allowed"] = [bool(v) for v in data["allowed"]]
    except (KeyError, TypeError, ValueError):
        return None
    return plan


def feedback_to_json(record: FeedbackRecord) -> dict[str, Any]:
    """The JSON-ready form of a feedback record."""
    return {
        "feedback_id": record.feedback_id,
        "request_id": record.request_id,
        "ts": ts_text(record.ts),
        "rating": record.rating,
        "correct": record.correct,
        "tenant_id": record.tenant_id,
    }


def feedback_from_json(data: Mapping[str, Any]) -> FeedbackRecord:
    """Rebuild a feedback record from `feedback_to_json` output or a stored row mapping."""
    rating, correct = data.get("rating"), data.get("correct")
    return FeedbackRecord(
        feedback_id=str(data["feedback_id"]),
        request_id=str(data["request_id"]),
        ts=parse_ts(data["ts"]),
        rating=None if rating is None else int(rating),
        correct=None if correct is None else bool(correct),
        tenant_id=str(data.get("tenant_id") or ""),
    )


def item_to_line(item: LogItem) -> str:
    """One spool line (without the newline) for a query or feedback record."""
    if isinstance(item, QueryRecord):
        return dumps({"type": "query", "v": 1, "record": query_to_json(item)})
    return dumps({"type": "feedback", "v": 1, "record": feedback_to_json(item)})


def item_from_line(line: str) -> LogItem:
    """Parse a spool line; ValueError (or KeyError/TypeError) when it is not one."""
    data = json.loads(line)
    if not isinstance(data, dict) or not isinstance(data.get("record"), dict):
        raise ValueError("not a query log spool line")
    if data.get("type") == "query":
        return query_from_json(data["record"])
    if data.get("type") == "feedback":
        return feedback_from_json(data["record"])
    raise ValueError(f"unknown spool line type {data.get('type')!r}")


def _json_field(value: Any, empty: Any) -> Any:
    # SQLite returns JSON columns as text, PostgreSQL's jsonb as Python objects.
    if value is None:
        return empty
    if isinstance(value, str):
        return json.loads(value)
    return value
