"""A value counts wherever it is given: in the environment or in the env file, for the
gate and for `opsgate migrate` alike; each value has one default; and the migrations
folder is the one the current directory's repository keeps, named in every summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from opsgate import resources
from opsgate.clients import web
from opsgate.clients.blob import VercelBlobStore
from opsgate.config import (
    DEFAULT_HTTP_TIMEOUT,
    Settings,
    applied,
    default_migrations_dir,
    in_effect,
)
from opsgate.errors import ConfigError
from opsgate.migrate import cli as migrate_cli
from opsgate.migrate.runner import run_migration
from opsgate.migrate.scripts import discover_scripts
from opsgate.sensitive import Secret
from opsgate.verify import tablehash

SHIPPED = resources.migrations_dir()
FIRST = sorted(SHIPPED.glob("2*.py"))[0]


def _env_file(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "target.env"
    f.write_text(text)
    return f


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty current directory and no opsgate variable in the environment."""
    for name in ("OPSGATE_HTTP_TIMEOUT", "OPSGATE_HASH_CONNECTIONS", "OPSGATE_MIGRATIONS_DIR",
                 "DATABASE_URL", "POSTGRES_URL", "DATABASE_URL_UNPOOLED",
                 "POSTGRES_URL_NON_POOLING"):
        monkeypatch.delenv(name, raising=False)
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    return here


def test_one_http_default_for_every_client(bare: Path) -> None:
    """A client made without a time-out (migration 1002's blob store) waited 10 s, 5 s to
    connect, while the documented default is 15 s."""
    with web.client() as c:
        assert c.timeout == httpx.Timeout(DEFAULT_HTTP_TIMEOUT) == httpx.Timeout(15.0)
    store = VercelBlobStore(Secret("t"), "https://blob.example")
    assert store._client.timeout == httpx.Timeout(15.0)


def test_migration_1002s_blob_store_honours_the_env_file(bare: Path, tmp_path: Path) -> None:
    settings = Settings.load(env_file=_env_file(tmp_path, "OPSGATE_HTTP_TIMEOUT=7\n"))
    with applied(settings):
        store = VercelBlobStore(Secret("t"), "https://blob.example")
    assert store._client.timeout == httpx.Timeout(7.0)
    assert in_effect().http_timeout == 15.0  # unbound again: the environment's


def test_hash_connections_from_the_env_file(bare: Path, tmp_path: Path) -> None:
    settings = Settings.load(env_file=_env_file(tmp_path, "OPSGATE_HASH_CONNECTIONS=3\n"))
    assert settings.hash_connections == 3 and settings.origins[
        "OPSGATE_HASH_CONNECTIONS"] == "env file"
    assert tablehash.hash_connections() == 2
    with applied(settings):
        assert tablehash.hash_connections() == 3
    with pytest.raises(ConfigError, match="OPSGATE_HASH_CONNECTIONS"):
        Settings.load(environ={"OPSGATE_HASH_CONNECTIONS": "17"})


def test_origins_say_where_each_value_came_from(bare: Path, tmp_path: Path) -> None:
    f = _env_file(tmp_path, "OPS_BASE_URL=https://file.example\nADMIN_PASSWORD=pw\n"
                  "RUN_OPS_HEALTH=true\n")
    s = Settings.load(environ={"OPS_BASE_URL": "https://env.example", "RUN_OPS_PARITY": "no"},
                      env_file=f)
    assert (s.origins["OPS_BASE_URL"], s.origins["ADMIN_PASSWORD"],
            s.origins["RUN_OPS_HEALTH"], s.origins["RUN_OPS_PARITY"],
            s.origins["VERCEL_TOKEN"]) == (
        "environment", "env file", "env file", "environment", "default")
    # The sandbox's own file wins over the environment for its target variables.
    s = Settings.load(environ={"OPS_BASE_URL": "https://env.example"}, env_file=f,
                      file_wins=True)
    assert s.ops_base_url == "https://file.example" and s.origins["OPS_BASE_URL"] == "env file"


def test_a_sandbox_file_takes_no_target_variable_from_the_environment(
        bare: Path, tmp_path: Path) -> None:
    """A CI job's environment holds production's variables: a sandbox run keeps only
    the machine's and the run's own (`RUN_VARIABLES`) and the flags."""
    f = _env_file(tmp_path, "DATABASE_URL=postgresql://sandbox@127.0.0.1/app\n")
    production = {name: "postgresql://prod:pw@prod.invalid/app" for name in (
        "DATABASE_URL", "POSTGRES_URL", "DATABASE_URL_UNPOOLED", "POSTGRES_URL_NON_POOLING",
        "DRILL_DATABASE_URL")} | {
        "VERCEL_TOKEN": "tok", "VERCEL_PROJECT_ID": "prj_prod", "BACKUP_OUTPUT_PATH": "/b",
        "OPSGATE_EXPECTATIONS_FILE": "/prod.toml", "OPSGATE_BLOB_DIR": "/blob",
        "OPS_BASE_URL": "https://prod.invalid", "OPSGATE_HTTP_TIMEOUT": "7",
        "OPSGATE_PG_BINDIR": "/env/bin", "RUN_OPS_HEALTH": "true"}
    s = Settings.load(environ=production, env_file=f, file_wins=True)
    assert s.database_url is not None and "sandbox@" in s.database_url.reveal()
    assert (s.database_url_unpooled, s.drill_database_url, s.vercel_token,
            s.vercel_project_id, s.backup_output_path, s.ops_base_url, s.blob_dir) == (
        None, None, None, None, None, None, None)
    assert s.expectations_file is None
    assert (s.http_timeout, s.pg_bindir, s.flags["RUN_OPS_HEALTH"]) == (7.0, "/env/bin", True)
    # A production URL libpq cannot read does not stop a sandbox run either.
    broken = {"DATABASE_URL": "postgresql://prod:pw@[prod.invalid/app"}
    assert Settings.load(environ=broken, env_file=f, file_wins=True).database_url is not None
    with pytest.raises(ConfigError, match="DATABASE_URL: libpq cannot read it"):
        Settings.load(environ=broken)


def test_a_database_url_libpq_cannot_read_is_refused_naming_the_variable(bare: Path) -> None:
    """Refused when read, in one line, never with the password: libpq quotes the whole
    value in its message; a query parameter's name is kept (Prisma's "pgbouncer")."""
    cases = {
        "DATABASE_URL": ("postgres://u:canary-pw@[bad/x", 'matching "]" in IPv6 host'),
        "POSTGRES_URL_NON_POOLING": ("postgresql://u:canary-pw@h/db?pgbouncer=true",
                                     'invalid URI query parameter: "pgbouncer"'),
        "DRILL_DATABASE_URL": ("host=h password=canary-pw x", 'missing "=" after "***"'),
    }
    for name, (value, reason) in cases.items():
        with pytest.raises(ConfigError) as caught:
            Settings.load(environ={name: value})
        message = str(caught.value)
        assert message.startswith(f"{name}: libpq cannot read it") and reason in message
        assert "canary-pw" not in message and "\n" not in message


def test_a_refresh_side_takes_only_the_named_variables_from_the_environment(
        bare: Path, tmp_path: Path) -> None:
    f = _env_file(tmp_path, "DATABASE_URL=postgresql://file@h/db\n")
    environ = {"DATABASE_URL": "postgresql://shell@h/prod", "OPSGATE_PG_BINDIR": "/env/bin"}
    s = Settings.load(environ=environ, env_file=f, from_environment=("OPSGATE_PG_BINDIR",))
    assert s.database_url is not None and "file@h" in s.database_url.reveal()
    assert s.pg_bindir == "/env/bin"
    f.write_text("DATABASE_URL=postgresql://file@h/db\nOPSGATE_PG_BINDIR=/file/bin\n")
    s = Settings.load(environ=environ, env_file=f, from_environment=("OPSGATE_PG_BINDIR",))
    assert s.pg_bindir == "/file/bin"


def _folder(root: Path, *names: str) -> Path:
    root.mkdir(parents=True)
    for name in names:
        (root / name).write_text("# not a migration\n")
    return root


def test_the_migrations_folder_default(bare: Path) -> None:
    assert default_migrations_dir() == (
        str(SHIPPED), "default: the migrations shipped with opsgate")
    # The app's npm scripts and another tool's migrations are not opsgate's.
    _folder(bare / "scripts" / "migrations", "20260301_1007_backfill.mjs", "_helpers.mjs")
    _folder(bare / "migrations", "env.py", "0001_initial.py")
    assert default_migrations_dir()[0] == str(SHIPPED)
    shutil.copy(FIRST, bare / "migrations")
    assert default_migrations_dir() == (
        str(bare / "migrations"), "default: ./migrations holds migration scripts")
    shutil.copy(FIRST, bare / "scripts" / "migrations")
    assert default_migrations_dir() == (
        str(bare / "scripts" / "migrations"),
        "default: ./scripts/migrations holds migration scripts")
    s = Settings.load(environ={})
    assert s.migrations_dir == str(bare / "scripts" / "migrations")
    assert s.origins["OPSGATE_MIGRATIONS_DIR"].startswith("default: ./scripts/migrations")
    s = Settings.load(environ={"OPSGATE_MIGRATIONS_DIR": "elsewhere"})
    assert (s.migrations_dir, s.origins["OPSGATE_MIGRATIONS_DIR"]) == ("elsewhere",
                                                                       "environment")


def test_opsgate_migrate_reads_the_folder_from_the_env_file(
        bare: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The ledger check read OPSGATE_MIGRATIONS_DIR through Settings (env file included),
    ``opsgate migrate`` from the environment only: the two could use different folders."""
    folder = _folder(tmp_path / "mine")
    shutil.copy(FIRST, folder)
    f = _env_file(tmp_path, f"OPSGATE_MIGRATIONS_DIR={folder}\n")
    assert migrate_cli.main(["--env-file", str(f), "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [Path(m["path"]).parent for m in listed] == [folder]
    # --migrations-dir still wins over the variable.
    assert migrate_cli.main(["--env-file", str(f), "list", "--json", "--migrations-dir",
                             str(SHIPPED)]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(discover_scripts(SHIPPED)) > 1


def test_every_run_summary_names_its_migrations_folder(bare: Path) -> None:
    script = discover_scripts(SHIPPED)[0]
    result = run_migration(script, Settings.load(environ={}))
    assert result.exit_code == 2 and "DATABASE_URL" in result.message
    assert result.summary["migrations_dir"] == str(SHIPPED)
