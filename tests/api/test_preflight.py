"""Start-up checks of files and directories: one line naming the path and the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_settings
from tierroute.api.preflight import check_paths
from tierroute.errors import ConfigError


@pytest.mark.parametrize(
    ("environ", "setting"),
    [
        (
            {"TIERROUTE_AUTH_TOKENS_FILE": "{missing}"},
            "auth.tokens_file (TIERROUTE_AUTH_TOKENS_FILE)",
        ),
        ({"TIERROUTE_TENANCY_TENANTS_FILE": "{missing}"}, "tenancy.tenants_file"),
        (
            {"TIERROUTE_TLS_CERT_FILE": "{missing}", "TIERROUTE_TLS_KEY_FILE": "{missing}"},
            "tls.cert_file",
        ),
        ({"TIERROUTE_MODEL_DIR": "{missing}"}, "routing.model_dir"),
        (
            {
                "TIERROUTE_QUERYLOG_ENABLED": "true",
                "TIERROUTE_QUERYLOG_SPOOL_PATH": "{missing}/s.jsonl",
            },
            "querylog.spool_path",
        ),
        (
            {
                "TIERROUTE_QUERYLOG_ENABLED": "true",
                "TIERROUTE_QUERYLOG_URL": "sqlite:///{missing}/q.db",
                "TIERROUTE_QUERYLOG_SPOOL_PATH": "{tmp}/s.jsonl",
            },
            "querylog.url",
        ),
        ({"TIERROUTE_TENANCY_STATE_URL": "sqlite:///{missing}/state.db"}, "tenancy.state_url"),
        (
            {"TIERROUTE_ANTHROPIC_BACKEND": "replay", "TIERROUTE_REPLAY_DATA": "{missing}"},
            "replay.data",
        ),
    ],
)
def test_a_path_that_cannot_work_is_one_line_naming_its_setting(
    tmp_path: Path, environ: dict[str, str], setting: str
) -> None:
    """Each file or directory setting, pointed somewhere unusable, names itself and the path."""
    missing = str(tmp_path / "missing")
    resolved = {
        k: v.replace("{missing}", missing).replace("{tmp}", str(tmp_path))
        for k, v in environ.items()
    }
    with pytest.raises(ConfigError) as err:
        check_paths(make_settings(resolved))
    message = str(err.value)
    assert "\n" not in message
    assert setting in message
    assert missing in message


def test_paths_that_work_pass(tmp_path: Path) -> None:
    """A writable spool and log directory and the shipped model pass, creating nothing."""
    settings = make_settings(
        {
            "TIERROUTE_QUERYLOG_ENABLED": "true",
            "TIERROUTE_QUERYLOG_URL": f"sqlite:///{tmp_path}/q.db",
            "TIERROUTE_QUERYLOG_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
        }
    )
    check_paths(settings)
    assert list(tmp_path.iterdir()) == []
