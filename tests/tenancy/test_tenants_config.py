"""Tenants in the configuration and in a tenants file, and who a call's tenant is."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc import aio

from tests.helpers import make_settings, running_server
from tests.tenancy.serving import EASY
from tierroute.api.security import bearer_metadata, hash_token
from tierroute.errors import ConfigError
from tierroute.settings import Settings
from tierroute.tenancy import TenantBook
from tierroute.v1 import tierroute_pb2 as pb


def test_tenant_tables_become_tenant_limits() -> None:
    """`[tenants.<id>]` reads budget, window, rates and mode; unset limits are 0 (none)."""
    settings = Settings.from_mapping(
        {
            **_tiers(),
            "tenants": {
                "acme": {"budget_usd": 5, "budget_window": "30d", "requests_per_minute": 60},
                "*": {"on_budget_exhausted": "cheapest"},
            },
        }
    )
    book = TenantBook.of(settings.tenants)
    acme = book.limits("acme")
    assert acme is not None
    assert (acme.budget_usd, acme.window_s, acme.requests_per_minute) == (5.0, 30 * 86_400.0, 60)
    assert (acme.tokens_per_minute, acme.on_budget_exhausted) == (0, "reject")
    other = book.limits("globex")
    assert other is not None
    assert other.on_budget_exhausted == "cheapest"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"budget_window": "1w"}, "budget_window must be one of 1h, 1d, 30d"),
        ({"on_budget_exhausted": "queue"}, "must be 'reject' or 'cheapest'"),
        ({"budget_usd": -1}, "budget_usd must not be negative"),
        ({"burst": 3}, "unknown setting tenants.acme.burst"),
    ],
)
def test_a_tenant_table_that_cannot_work_is_a_config_error(
    values: dict[str, object], message: str
) -> None:
    """Bad windows, modes, negative limits and unknown keys are refused, naming the tenant."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_mapping({**_tiers(), "tenants": {"acme": values}})


def test_tenants_in_two_places_are_refused(tmp_path: Path) -> None:
    """Tenants in the config and a tenants file at once would disagree: refused."""
    with pytest.raises(ConfigError, match="set tenants in one place"):
        Settings.from_mapping(
            {
                **_tiers(),
                "tenants": {"acme": {}},
                "tenancy": {"tenants_file": str(tmp_path / "t.toml")},
            }
        )


def test_a_malformed_tenants_file_names_itself_and_its_setting(tmp_path: Path) -> None:
    """A tenants file that does not parse is one ConfigError naming the file and setting."""
    path = tmp_path / "tenants.toml"
    path.write_text("[tenants.acme\n")
    with pytest.raises(
        ConfigError, match=r"tenants\.toml \(tenancy\.tenants_file\) does not parse"
    ):
        TenantBook.load(path)


async def test_with_authentication_on_a_tenant_header_for_another_tenant_is_refused(
    tmp_path: Path,
) -> None:
    """The token names the tenant: a tenant header naming another is PERMISSION_DENIED."""
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[tenants]\nacme = ["{hash_token("acme-token")}"]\n')
    settings = make_settings({"TIERROUTE_AUTH_TOKENS_FILE": str(tokens)})
    metadata = (*bearer_metadata("acme-token"), ("x-tierroute-tenant", "globex"))
    async with running_server(settings, scorer=EASY) as s:
        with pytest.raises(aio.AioRpcError) as err:
            await s.stub.Route(pb.RouteRequest(query="q"), metadata=metadata)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _tiers() -> dict[str, object]:
    return {
        "tiers": [
            {"name": "cheap", "model": "a", "input_usd_per_mtok": 1, "output_usd_per_mtok": 5},
            {"name": "top", "model": "b", "input_usd_per_mtok": 5, "output_usd_per_mtok": 25},
        ]
    }
