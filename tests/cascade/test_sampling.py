"""Judge sampling on its own: per-query-type rates, and their configuration entries."""

from __future__ import annotations

import math

import pytest

from tierroute.cascade.sampling import JudgeSampler, parse_rates
from tierroute.errors import ConfigError
from tierroute.routing.features import QUERY_TYPES


@pytest.mark.parametrize("query_type", QUERY_TYPES)
def test_each_query_type_gets_its_own_sample_rate(query_type: str) -> None:
    """Over 2000 request ids each query type's judged share matches its configured rate."""
    rates = {"factual": 0.2, "analytical": 0.5, "creative": 0.05, "coding": 0.8}
    sampler = JudgeSampler(0.2, rates)
    n = 2000
    judged = sum(sampler.should_judge(f"req-{i}", query_type) for i in range(n))
    p = rates[query_type]
    # Four binomial standard deviations: fails by chance far less than once in 10,000 runs.
    assert abs(judged - n * p) <= 4 * math.sqrt(n * p * (1 - p))


def test_sample_rates_config_parses_and_rejects_unknown_types() -> None:
    """Per-type rates read from "type=rate" entries; unknown types are configuration errors."""
    assert parse_rates(["coding=0.5", "factual = 0.1"]) == {"coding": 0.5, "factual": 0.1}
    with pytest.raises(ConfigError):
        parse_rates(["poetry=0.5"])
