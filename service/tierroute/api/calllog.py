"""The query-log side of the HTTP endpoint's calls, in the gRPC servicer's form.

The HTTP endpoint (`tierroute.api.http`) hands each call here once the core has answered or
failed: a record goes to the query log (with a vocabulary-coverage number for a sample of
calls, and the text only for an opted-in audit sample), and a failure is logged under the
status names the gRPC servicer uses (the gRPC code names, the query log's one vocabulary).
The servicer's own `_record` adds shadow sampling; moving both onto this class is the next
step (docs/http.md). Live labelling (`[shadow] label_rate`) samples answered calls here as
the servicer does: a sampled call keeps its text and the decision that routed it
(`shadow.*` metadata), and is queued for the background labeller.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from grpc import aio

from tierroute.api import recording
from tierroute.api.live_labels import LiveLabeller, decision_metadata, is_unfamiliar
from tierroute.api.status import status_for
from tierroute.cascade import CascadeQuery, CascadeResult
from tierroute.errors import TierrouteError
from tierroute.model import ModelReloader
from tierroute.querylog import QueryLog, QueryRecord
from tierroute.querylog.records import Kind
from tierroute.settings import Settings
from tierroute.v1 import tierroute_pb2 as pb


def failure_status(exc: BaseException) -> str | None:
    """The query log's status for a call that failed with `exc` (None: already recorded)."""
    if isinstance(exc, TierrouteError):
        return status_for(exc).name
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        # Cancelled, or a stream the client left (gRPC closes its generator).
        return "CANCELLED"
    if isinstance(exc, aio.AbortError):
        return None  # aborted calls were recorded where they aborted
    return "INTERNAL"


def request_texts(request: pb.RouteRequest | pb.CascadeRequest) -> list[str]:
    """The user text of a request, for the record of a call that failed before routing."""
    if request.query:
        return [request.query]
    return [m.content for m in request.messages if m.role == pb.ROLE_USER]


class CallLog:
    """Records calls in the query log."""

    def __init__(
        self,
        settings: Settings,
        querylog: QueryLog | None,
        models: ModelReloader | None = None,
        labels: LiveLabeller | None = None,
    ) -> None:
        self._log = querylog
        self._labels = labels
        self._models = models
        self.store_text = settings.querylog.store_text
        self._audit_rate = settings.querylog.audit_sample_rate
        self._rng = random.Random()

    def record(
        self,
        record: QueryRecord,
        text: str,
        answer: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Submit `record`, with `extra` fields (a shadow sample's), its coverage number and
        its audit sample when drawn."""
        if self._log is None:
            return
        changes: dict[str, Any] = dict(extra or {})
        if self._models is not None:
            # A number for drift checks, for a sample of calls; never the text itself.
            coverage = self._models.coverage(text, record.query_sha256, record.model_version)
            if coverage is not None:
                changes["vocab_coverage"] = coverage
        if answer is not None and self._audit_rate > 0 and self._rng.random() < self._audit_rate:
            # An opted-in audit sample: the question and answer an audit re-judges.
            changes.update(query_text=text, answer_text=answer)
        self._log.submit(dataclasses.replace(record, **changes) if changes else record)

    def answered(self, query: CascadeQuery, result: CascadeResult) -> None:
        """Log an answered Cascade call (and queue it for live labelling when sampled)."""
        strategy = "self_routing" if query.self_routing else ""
        record = recording.cascade_record(
            query.route, result, strategy=strategy, store_text=self.store_text
        )
        text = query.route.text
        unfamiliar = is_unfamiliar(result.decision)
        if (
            self._log is None
            or self._labels is None
            or result.decision is None
            or not self._labels.wants(unfamiliar=unfamiliar)
        ):
            self.record(record, text, result.answer)
            return
        metadata = {**record.metadata, **decision_metadata(result.decision)}
        self.record(record, text, result.answer, {"metadata": metadata, "query_text": text})
        # Queued only: the labelling runs in the background, after this call returns.
        self._labels.offer(record.request_id, text, unfamiliar=unfamiliar)

    def failed(
        self,
        kind: Kind,
        exc: BaseException,
        *,
        request_id: str,
        texts: Sequence[str],
        tenant_id: str,
        session_id: str,
    ) -> None:
        """Log a call that failed with `exc`, by the hash of its text."""
        status = failure_status(exc)
        if self._log is None or status is None:
            return
        self._log.submit(
            recording.failed_record(
                kind,
                request_id=request_id[:128] or uuid.uuid4().hex,
                texts=list(texts),
                status=status,
                store_text=self.store_text,
                tenant_id=tenant_id,
                session_id=session_id,
            )
        )
