"""Tenancy: tenants' budgets over rolling windows, their rate limits, the Cascade's per-call
spend reservations, sessions shared by replicas, request-id idempotency, and the files that
reload without a restart. Transport-free, so every edge (gRPC, HTTP) makes the same checks;
the state lives in the query log's database (`state.StateStore`).
"""

from tierroute.tenancy.core import (
    ANY_TENANT,
    Admission,
    CascadeCall,
    Tenancy,
    TenantBook,
    TenantLedger,
    budget_message,
    resolve_tenant,
)
from tierroute.tenancy.reload import Reloader, WatchedFile
from tierroute.tenancy.state import Claim, Rate, Spend, StateStore

__all__ = [
    "ANY_TENANT",
    "Admission",
    "CascadeCall",
    "Claim",
    "Rate",
    "Reloader",
    "Spend",
    "StateStore",
    "Tenancy",
    "TenantBook",
    "TenantLedger",
    "WatchedFile",
    "budget_message",
    "resolve_tenant",
]
