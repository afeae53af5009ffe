from pathlib import Path

import pytest

from opsgate.config import FLAG_DEFAULTS, Settings, parse_flag
from opsgate.errors import ConfigError, MissingEnvError
from opsgate.gate import marker_expression


@pytest.mark.parametrize("raw", ["true", "TRUE", "1", "yes", "Yes", " true "])
def test_true_words(raw: str) -> None:
    assert parse_flag("RUN_OPS_X", raw, False) is True


@pytest.mark.parametrize("raw", ["false", "False", "0", "no", "NO"])
def test_false_words(raw: str) -> None:
    assert parse_flag("RUN_OPS_X", raw, True) is False


@pytest.mark.parametrize("raw", ["maybe", "2", "on", "off", "y"])
def test_bad_flag_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="RUN_OPS_X"):
        parse_flag("RUN_OPS_X", raw, True)


def test_defaults_give_the_documented_expression() -> None:
    s = Settings.load(environ={})
    assert dict(s.flags) == FLAG_DEFAULTS
    assert marker_expression(s.flags) == "preflight or parity or ledger"
    assert not s.has_target


def test_database_url_wins_over_postgres_url() -> None:
    s = Settings.load(environ={"DATABASE_URL": "postgresql://a@h/1", "POSTGRES_URL": "postgresql://b@h/2"})
    assert s.database_url is not None and s.database_url.reveal().endswith("/1")
    s = Settings.load(environ={"POSTGRES_URL": "postgresql://b@h/2"})
    assert s.database_url_variable == "POSTGRES_URL"


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    f = tmp_path / ".env.production.local"
    f.write_text('DATABASE_URL="postgresql://file@h/db"\nOPS_BASE_URL=https://file.example\n'
                 "ADMIN_PASSWORD=from-file\n")
    s = Settings.load(environ={"OPS_BASE_URL": "https://env.example"}, env_file=f)
    assert s.ops_base_url == "https://env.example"
    assert s.database_url is not None and "file@h" in s.database_url.reveal()
    assert s.admin_password is not None and s.admin_password.reveal() == "from-file"


def test_missing_env_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        Settings.load(environ={}, env_file=tmp_path / "nope.env")


def test_require_names_the_variable() -> None:
    s = Settings.load(environ={})
    with pytest.raises(MissingEnvError, match="DATABASE_URL"):
        s.require_database_url()
    with pytest.raises(MissingEnvError, match="ADMIN_PASSWORD"):
        s.require_admin_password()


def test_settings_repr_and_identity_hold_no_secret() -> None:
    s = Settings.load(environ={
        "DATABASE_URL": "postgresql://u:pw-canary-1@db.example/app",
        "ADMIN_PASSWORD": "pw-canary-2",
        "BLOB_READ_WRITE_TOKEN": "vercel_blob_rw_canary-3",
    })
    shown = repr(s) + str(s.target_identity())
    for canary in ("pw-canary-1", "pw-canary-2", "canary-3"):
        assert canary not in shown
    assert s.target_identity()["name"] == "db.example"
