"""The environment contract in one place: every variable opsgate reads, its one
default, and `Settings`, the only reader of configuration.

`Settings.load()` merges an optional env file (such as the one ``vercel env pull``
writes), read as the app's ``@next/env`` reads it (`opsgate.envfile`), under the process
environment: a variable already in the environment wins. Nothing else in opsgate reads
an opsgate variable from ``os.environ``, so a value in an env file counts wherever the
same value in the environment would (a self-test scans the source for other readers).
Secrets are wrapped at the moment they are read, so nothing downstream ever holds a
printable copy.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from opsgate import envfile, resources
from opsgate.clients.db import host_of, is_pooler_host
from opsgate.errors import ConfigError, MissingEnvError, SessionEndpointError
from opsgate.gate import CHECKS
from opsgate.sensitive import MASK, Redactor, Secret, SecretUrl, mask_url, secret_parts

TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no"})

DEFAULT_BLOB_PREFIX = "admin/"
DEFAULT_BLOB_API_URL = "https://blob.vercel-storage.com"
DEFAULT_VERCEL_API_URL = "https://api.vercel.com"
DEFAULT_VERCEL_PROJECT_FILE = ".vercel/project.json"
#: Seconds per HTTP attempt, for every HTTP client of opsgate (connect, read, write and
#: pool waits alike), whoever makes it.
DEFAULT_HTTP_TIMEOUT = 15.0
#: Seconds a migration statement may run; 0: the server's own setting.
DEFAULT_STATEMENT_TIMEOUT = 0.0
#: Connections a large table's canon-v1 hash reads with, the caller's included.
DEFAULT_HASH_CONNECTIONS = 2
MAX_HASH_CONNECTIONS = 16
#: Where change control looks, relative to the repository's top (docs/checks.md).
DEFAULT_CHANGE_MIGRATIONS = "migrations/"
DEFAULT_CHANGE_INDEX = "docs/migrations.md"
DEFAULT_CHANGE_CHANGELOG = "CHANGELOG.md"
DEFAULT_CHANGE_CHECKPOINT = "docs/checkpoints.md"
#: Migration folders looked for in the current directory when OPSGATE_MIGRATIONS_DIR is
#: not set, in this order: the app's (its runbook keeps them in scripts/migrations/),
#: then the usual name; else the migrations shipped with opsgate.
LOCAL_MIGRATIONS_DIRS = ("scripts/migrations", "migrations")
#: A file named like a migration script opsgate runs (YYYYMMDD_<project>_..., the rest
#: is `opsgate.migrate.scripts`' to check): a folder of the app's npm scripts, or of
#: another tool's migrations, holds none and is not taken for opsgate's.
_SCRIPT_NAME = re.compile(r"^\d{8}_\d+_[a-z0-9]+_to_[a-z0-9]+_[a-z0-9_]+\.py$")

Masking = Literal["secret", "url"]


@dataclass(frozen=True)
class Variable:
    """One variable of the contract: what it is for, what an unset one means (its one
    default, as `opsgate env` and docs/configuration.md show it; None: none, unset means
    not configured) and how its value is masked (never shown, or a URL's password)."""

    meaning: str
    default: str | None = None
    masked: Masking | None = None


#: Every variable opsgate reads, the RUN_OPS_* flags apart (`FLAG_DEFAULTS`). A
#: self-test holds it against docs/configuration.md's table both ways, and against every
#: such name in opsgate's source.
VARIABLES: dict[str, Variable] = {
    "DATABASE_URL": Variable("target database (wins over POSTGRES_URL); on Neon via "
                             "Vercel the POOLED endpoint", masked="url"),
    "POSTGRES_URL": Variable("target database, when DATABASE_URL is not set", masked="url"),
    "DATABASE_URL_UNPOOLED": Variable(
        "the DIRECT endpoint, for work that needs a session (drill, migrations, scratch "
        "databases); wins over POSTGRES_URL_NON_POOLING", masked="url"),
    "POSTGRES_URL_NON_POOLING": Variable(
        "the direct endpoint, when DATABASE_URL_UNPOOLED is not set", masked="url"),
    "OPSGATE_DATABASE_POOLED": Variable(
        "true when DATABASE_URL is a transaction pooler whose host does not end in -pooler",
        "judged from the host"),
    "OPSGATE_STATEMENT_TIMEOUT": Variable("seconds a migration statement may run",
                                          "0 (the server's own setting)"),
    "OPS_BASE_URL": Variable("base URL of the deployment", masked="url"),
    "ADMIN_PASSWORD": Variable("admin API login", masked="secret"),
    "ADMIN_STORAGE_BACKEND": Variable("must be 'neon' in production"),
    "BLOB_READ_WRITE_TOKEN": Variable("Vercel Blob token", masked="secret"),
    "ADMIN_BLOB_PREFIX": Variable("blob prefix of the admin state", DEFAULT_BLOB_PREFIX),
    "VERCEL_BLOB_API_URL": Variable("Vercel Blob API base", DEFAULT_BLOB_API_URL),
    "BACKUP_OUTPUT_PATH": Variable("where the drill's backup archive is written (kept)",
                                   "a temporary file, removed"),
    "DRILL_DATABASE_URL": Variable("an empty database the drill restores into (wins over "
                                   "OPSGATE_DRILL_RESTORE)", "none: see OPSGATE_DRILL_RESTORE",
                                   masked="url"),
    "OPSGATE_DRILL_RESTORE": Variable("where the drill restores its copy: 'local' (a "
                                      "throwaway PostgreSQL on this machine) or "
                                      "'target-scratch' (a scratch database on the target "
                                      "server)", "local"),
    "OPSGATE_PG_BINDIR": Variable("folder of the PostgreSQL programs to use", "discovered"),
    "OPSGATE_PGBOUNCER": Variable("the pgbouncer program of the Neon-shaped sandbox",
                                  "pgbouncer on PATH, else /usr/sbin/pgbouncer"),
    "OPSGATE_CACHE_DIR": Variable("cache of template clusters; 'off' turns it off",
                                  "$XDG_CACHE_HOME/opsgate or ~/.cache/opsgate"),
    "OPSGATE_TARGET_NAME": Variable("name of the target in reports", "the database host"),
    "OPSGATE_LEGACY_PAYLOAD_FILE": Variable("legacy payload file for knowledge drift",
                                            "admin_content_state key 'constellation'"),
    "OPSGATE_MIGRATIONS_DIR": Variable(
        "folder of migration scripts (ledger check, opsgate migrate)",
        f"./{LOCAL_MIGRATIONS_DIRS[0]} or ./{LOCAL_MIGRATIONS_DIRS[1]} if it holds "
        "migration scripts, else the ones shipped with opsgate"),
    "OPSGATE_HTTP_TIMEOUT": Variable("seconds per HTTP attempt", f"{DEFAULT_HTTP_TIMEOUT:g}"),
    "OPSGATE_HASH_CONNECTIONS": Variable(
        f"connections a large table's canon-v1 hash reads with, sharing one snapshot "
        f"(1 to {MAX_HASH_CONNECTIONS}; 1: one COPY)", str(DEFAULT_HASH_CONNECTIONS)),
    "OPSGATE_BLOB_DIR": Variable("read the blob layout from this folder (the 'file' "
                                 "backend) instead of Vercel Blob"),
    "OPSGATE_EXPECTATIONS_FILE": Variable("expected production markers (TOML: floors, "
                                          "domains, migrations, pinned hashes)",
                                          "the built-in floors"),
    "VERCEL_TOKEN": Variable("Vercel REST API token for the deployment check",
                             masked="secret"),
    "VERCEL_PROJECT_ID": Variable("the Vercel project the deployment check inspects",
                                  "projectId of the project file"),
    "VERCEL_ORG_ID": Variable("the project's team or account id, sent as teamId",
                              "orgId of the project file"),
    "VERCEL_API_URL": Variable("Vercel REST API base", DEFAULT_VERCEL_API_URL),
    "VERCEL_ENV": Variable("read from a refresh's target env file: 'production' marks "
                           "a production target"),
    "VERCEL_URL": Variable("read from a refresh's target env file: set, with "
                           "ADMIN_STORAGE_BACKEND=neon, it marks a deployment's file"),
    "OPSGATE_VERCEL_PROJECT_FILE": Variable("the project link file `vercel link` writes",
                                            DEFAULT_VERCEL_PROJECT_FILE),
    "OPSGATE_CHANGE_RANGE": Variable("git range the change-control check inspects, "
                                     "base..head"),
    "OPSGATE_CHANGE_REPO": Variable("git repository of the change-control check",
                                    "the current directory's"),
    "OPSGATE_CHANGE_MIGRATIONS": Variable("where migration scripts live, for change "
                                          "control", DEFAULT_CHANGE_MIGRATIONS),
    "OPSGATE_CHANGE_INDEX": Variable("the migration index", DEFAULT_CHANGE_INDEX),
    "OPSGATE_CHANGE_CHANGELOG": Variable("the changelog", DEFAULT_CHANGE_CHANGELOG),
    "OPSGATE_CHANGE_CHECKPOINT": Variable("the checkpoint log", DEFAULT_CHANGE_CHECKPOINT),
}

#: The gate flags and their defaults, read from the gate's table (`opsgate.gate.CHECKS`),
#: the one place that says which checks are on by default.
FLAG_DEFAULTS: dict[str, bool] = {c.flag: c.default_on for c in CHECKS}


def parse_flag(name: str, raw: str | None, default: bool) -> bool:
    """true/false/1/0/yes/no in any case; empty or unset gives the default."""
    if raw is None or raw.strip() == "":
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(
        f"{name}={raw.strip()!r} is not a flag value; use true/false, 1/0 or yes/no"
    )


#: Where the drill may restore its copy (docs/checks.md, "The drill's restore").
DRILL_RESTORE_MODES = ("local", "target-scratch")


def _drill_restore(raw: str | None) -> str:
    """'local' unless told otherwise: a scratch copy on the target server is a write to
    production, which the runbook has approved separately."""
    mode = (raw or "local").lower()
    if mode not in DRILL_RESTORE_MODES:
        raise ConfigError(f"OPSGATE_DRILL_RESTORE={raw!r}: expected one of "
                          f"{', '.join(DRILL_RESTORE_MODES)}")
    return mode


def _database_url(name: str, raw: str | None) -> SecretUrl | None:
    """``raw`` as a `SecretUrl` once libpq's own parser (through psycopg) reads it: a URL
    it cannot read is refused here, naming the variable, rather than deep in a check or
    in the redactor. libpq's message quotes pieces of the value; only a query
    parameter's name (``invalid URI query parameter: "pgbouncer"``) and a lone
    punctuation mark (``matching "]"``) are kept from them: anything else may be part of
    the password, and is masked."""
    if not raw:
        return None
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(raw)
    except ProgrammingError as exc:
        names = {part.split("=", 1)[0] for part in raw.partition("?")[2].split("&")}

        def kept(quoted: re.Match[str]) -> str:
            piece = quoted[1]
            keep = (piece in names and piece != raw) or (
                len(piece) == 1 and not piece.isalnum())
            return quoted[0] if keep else f'"{MASK}"'

        reason = re.sub(r'"([^"]*)"', kept, str(exc).strip().splitlines()[0])
        raise ConfigError(f"{name}: libpq cannot read it as a connection URL or keyword "
                          f"string: {reason}") from None
    return SecretUrl(raw)


def _positive_float(name: str, raw: str | None, default: float, *, zero: bool = False
                    ) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{name}={raw!r} is not a positive number of seconds")
    return value


def _connections(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_HASH_CONNECTIONS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_HASH_CONNECTIONS:
        raise ConfigError(f"OPSGATE_HASH_CONNECTIONS={raw!r} is not a number of "
                          f"connections from 1 to {MAX_HASH_CONNECTIONS}")
    return value


def default_migrations_dir(here: Path | None = None) -> tuple[str, str]:
    """The migrations folder when OPSGATE_MIGRATIONS_DIR is not set, and why: the first
    of `LOCAL_MIGRATIONS_DIRS` below ``here`` (default: the current directory) that
    holds a script named like a migration, else the migrations shipped with opsgate.
    Run in the app's repository, ``opsgate migrate`` and the ledger check then read the
    app's own scripts, not a copy that came with the package."""
    base = Path.cwd() if here is None else here
    for name in LOCAL_MIGRATIONS_DIRS:
        folder = base / name
        if folder.is_dir() and any(_SCRIPT_NAME.match(p.name) for p in folder.iterdir()):
            return str(folder), f"default: ./{name} holds migration scripts"
    return str(resources.migrations_dir()), "default: the migrations shipped with opsgate"


#: Variables of this machine and of the run's own policy rather than of the target. A
#: sandbox run keeps these (and the RUN_OPS_* flags) from the environment and takes every
#: other variable from the sandbox alone: a production DATABASE_URL_UNPOOLED, VERCEL_TOKEN
#: or expectations file in a CI job's environment never reaches the sandbox's checks.
RUN_VARIABLES = frozenset({
    "OPSGATE_STATEMENT_TIMEOUT", "OPSGATE_DRILL_RESTORE", "OPSGATE_PG_BINDIR",
    "OPSGATE_PGBOUNCER", "OPSGATE_CACHE_DIR", "OPSGATE_HTTP_TIMEOUT",
    "OPSGATE_HASH_CONNECTIONS", "OPSGATE_CHANGE_RANGE", "OPSGATE_CHANGE_REPO",
    "OPSGATE_CHANGE_MIGRATIONS", "OPSGATE_CHANGE_INDEX", "OPSGATE_CHANGE_CHANGELOG",
    "OPSGATE_CHANGE_CHECKPOINT",
})


def without_target(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the variables that describe a target (all but
    `RUN_VARIABLES`): for a run whose target is a sandbox's file alone."""
    return {k: v for k, v in environ.items() if k not in VARIABLES or k in RUN_VARIABLES}


#: Variables whose whole value is a secret; URL variables keep their host, not password.
SECRET_VARIABLES = frozenset(k for k, v in VARIABLES.items() if v.masked == "secret")
URL_VARIABLES = frozenset(k for k, v in VARIABLES.items() if v.masked == "url")


def shown(name: str, value: str) -> str:
    """A variable's value as opsgate may print it: never a secret's value, a URL
    without its password (`Settings.source` keeps this form: it is for "is it set?"
    questions and may end up in a repr or a report; `opsgate env` prints it)."""
    if name in SECRET_VARIABLES:
        return MASK if value.strip() else value
    if name in URL_VARIABLES:
        return mask_url(value)
    return value


def parse_env_file(path: str | os.PathLike[str]) -> envfile.EnvFile:
    """Parse an env file; a missing file or an unreadable line is a configuration error
    (naming the file and the line, never a value), raised before anything runs."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--env-file {p}: no such file")
    return envfile.read(p, f"--env-file {p}")


def read_env_file(path: str | os.PathLike[str],
                  environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The file's variables as ``@next/env`` gives them to a process started with
    ``environ``; the default, no environment, reads the file alone."""
    return parse_env_file(path).values({} if environ is None else environ)


def _merged_environment(
    environ: Mapping[str, str] | None,
    env_file: str | os.PathLike[str] | None,
    file_wins: bool,
    from_environment: Collection[str] | None,
) -> tuple[dict[str, str], Mapping[str, str], envfile.EnvFile | None]:
    """`Settings.load`'s variables: ``env_file`` merged under ``environ``; with what its
    expansion saw (for the origins) and the parsed file, if any."""
    outer: Mapping[str, str] = os.environ if environ is None else environ
    parsed = parse_env_file(env_file) if env_file is not None else None
    if file_wins:
        outer = without_target(outer)
    if from_environment is not None:
        outer = {k: v for k, v in outer.items() if k in from_environment
                 and (parsed is None or k not in parsed.entries)}
    env: dict[str, str] = dict(outer)
    seen: Mapping[str, str] = outer
    if parsed is not None:
        # Expansion sees the environment the file is merged under, as in the app; a
        # file that wins is expanded as if the environment did not set its keys.
        if file_wins:
            seen = {k: v for k, v in outer.items()
                    if k in FLAG_DEFAULTS or k not in parsed.entries}
        env.update(parsed.values(seen))
    return env, seen, parsed


def _database_fields(get: Callable[[str], str | None]) -> dict[str, Any]:
    """`Settings` fields of the database: its URLs (Vercel's names as fallbacks) and
    the variable each came from, pooling, the statement time-out, the drill's."""
    db_var = "DATABASE_URL" if get("DATABASE_URL") else (
        "POSTGRES_URL" if get("POSTGRES_URL") else None
    )
    db_url = get(db_var) if db_var else None
    direct_var = "DATABASE_URL_UNPOOLED" if get("DATABASE_URL_UNPOOLED") else (
        "POSTGRES_URL_NON_POOLING" if get("POSTGRES_URL_NON_POOLING") else None
    )
    direct_url = get(direct_var) if direct_var else None
    pooled_raw = get("OPSGATE_DATABASE_POOLED")
    drill = get("DRILL_DATABASE_URL")
    return {
        "database_url": _database_url(db_var, db_url) if db_var else None,
        "database_url_variable": db_var,
        "database_url_unpooled": (_database_url(direct_var, direct_url)
                                  if direct_var else None),
        "database_url_unpooled_variable": direct_var,
        "declared_pooled": (parse_flag("OPSGATE_DATABASE_POOLED", pooled_raw, False)
                            if pooled_raw is not None else None),
        "statement_timeout": _positive_float(
            "OPSGATE_STATEMENT_TIMEOUT", get("OPSGATE_STATEMENT_TIMEOUT"),
            DEFAULT_STATEMENT_TIMEOUT, zero=True),
        "backup_output_path": get("BACKUP_OUTPUT_PATH"),
        "drill_database_url": _database_url("DRILL_DATABASE_URL", drill),
        "drill_restore": _drill_restore(get("OPSGATE_DRILL_RESTORE")),
    }


def _service_fields(get: Callable[[str], str | None]) -> dict[str, Any]:
    """`Settings` fields of the app and its services: the base URL, the admin password,
    the blob store and Vercel's API."""
    password = get("ADMIN_PASSWORD")
    token = get("BLOB_READ_WRITE_TOKEN")
    base = get("OPS_BASE_URL")
    vercel_token = get("VERCEL_TOKEN")
    return {
        "ops_base_url": base.rstrip("/") if base else None,
        "admin_password": Secret(password) if password else None,
        "admin_storage_backend": get("ADMIN_STORAGE_BACKEND"),
        "blob_read_write_token": Secret(token) if token else None,
        "admin_blob_prefix": get("ADMIN_BLOB_PREFIX") or DEFAULT_BLOB_PREFIX,
        "vercel_blob_api_url": (get("VERCEL_BLOB_API_URL") or DEFAULT_BLOB_API_URL).rstrip("/"),
        "http_timeout": _positive_float("OPSGATE_HTTP_TIMEOUT", get("OPSGATE_HTTP_TIMEOUT"),
                                        DEFAULT_HTTP_TIMEOUT),
        "vercel_token": Secret(vercel_token) if vercel_token else None,
        "vercel_project_id": get("VERCEL_PROJECT_ID"),
        "vercel_org_id": get("VERCEL_ORG_ID"),
        "vercel_api_url": (get("VERCEL_API_URL") or DEFAULT_VERCEL_API_URL).rstrip("/"),
    }


def _tool_fields(get: Callable[[str], str | None]) -> dict[str, Any]:
    """`Settings` fields of opsgate's own tools and files: the hashes' connections,
    PostgreSQL programs, cache, sandbox, payloads, expectations and the change record's
    files. (The three groups are built in this order so that, of several bad values,
    the same one is reported first as before they were split.)"""
    return {
        "hash_connections": _connections(get("OPSGATE_HASH_CONNECTIONS")),
        "pg_bindir": get("OPSGATE_PG_BINDIR"),
        "pgbouncer": get("OPSGATE_PGBOUNCER"),
        "cache_dir": get("OPSGATE_CACHE_DIR"),
        "target_name": get("OPSGATE_TARGET_NAME"),
        "legacy_payload_file": get("OPSGATE_LEGACY_PAYLOAD_FILE"),
        "blob_dir": get("OPSGATE_BLOB_DIR"),
        "expectations_file": get("OPSGATE_EXPECTATIONS_FILE"),
        "vercel_project_file": (get("OPSGATE_VERCEL_PROJECT_FILE")
                                or DEFAULT_VERCEL_PROJECT_FILE),
        "change_range": get("OPSGATE_CHANGE_RANGE"),
        "change_repo": get("OPSGATE_CHANGE_REPO"),
        "change_migrations": get("OPSGATE_CHANGE_MIGRATIONS") or DEFAULT_CHANGE_MIGRATIONS,
        "change_index": get("OPSGATE_CHANGE_INDEX") or DEFAULT_CHANGE_INDEX,
        "change_changelog": get("OPSGATE_CHANGE_CHANGELOG") or DEFAULT_CHANGE_CHANGELOG,
        "change_checkpoint": get("OPSGATE_CHANGE_CHECKPOINT") or DEFAULT_CHANGE_CHECKPOINT,
    }


@dataclass(frozen=True)
class Settings:
    """What one run knows about its target. Build it with `Settings.load`."""

    database_url: SecretUrl | None = None
    database_url_variable: str | None = None
    database_url_unpooled: SecretUrl | None = None
    database_url_unpooled_variable: str | None = None
    declared_pooled: bool | None = None
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT
    ops_base_url: str | None = None
    admin_password: Secret | None = None
    admin_storage_backend: str | None = None
    blob_read_write_token: Secret | None = None
    admin_blob_prefix: str = DEFAULT_BLOB_PREFIX
    vercel_blob_api_url: str = DEFAULT_BLOB_API_URL
    backup_output_path: str | None = None
    drill_database_url: SecretUrl | None = None
    drill_restore: str = "local"
    pg_bindir: str | None = None
    pgbouncer: str | None = None
    #: OPSGATE_CACHE_DIR as given ("off" included); None: the default folder.
    cache_dir: str | None = None
    target_name: str | None = None
    legacy_payload_file: str | None = None
    migrations_dir: str = field(default_factory=lambda: default_migrations_dir()[0])
    http_timeout: float = DEFAULT_HTTP_TIMEOUT
    hash_connections: int = DEFAULT_HASH_CONNECTIONS
    blob_dir: str | None = None
    expectations_file: str | None = None
    vercel_token: Secret | None = None
    vercel_project_id: str | None = None
    vercel_org_id: str | None = None
    vercel_api_url: str = DEFAULT_VERCEL_API_URL
    vercel_project_file: str = DEFAULT_VERCEL_PROJECT_FILE
    change_range: str | None = None
    change_repo: str | None = None
    change_migrations: str = DEFAULT_CHANGE_MIGRATIONS
    change_index: str = DEFAULT_CHANGE_INDEX
    change_changelog: str = DEFAULT_CHANGE_CHANGELOG
    change_checkpoint: str = DEFAULT_CHANGE_CHECKPOINT
    flags: Mapping[str, bool] = field(default_factory=lambda: dict(FLAG_DEFAULTS))
    source: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: Where each variable and flag came from: "environment", "env file", or
    #: "default" (with why, for a default that depends on the current directory).
    origins: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        env_file: str | os.PathLike[str] | None = None,
        *,
        file_wins: bool = False,
        from_environment: Collection[str] | None = None,
    ) -> Settings:
        """Merge ``env_file`` under ``environ`` (default ``os.environ``) and parse it.

        ``file_wins`` is for the sandbox's own file: the target is then the file's alone
        (of the environment's variables only `RUN_VARIABLES` count: a stray DATABASE_URL
        must never redirect a sandbox run), while the RUN_OPS_* flags still come from the
        environment. ``from_environment`` is for a file that describes one side of a
        refresh: of the environment, only these variables count, and only where the file
        does not set them.
        """
        env, seen, parsed = _merged_environment(environ, env_file, file_wins,
                                                 from_environment)

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() != "" else None

        flags = {name: parse_flag(name, env.get(name), d) for name, d in FLAG_DEFAULTS.items()}
        origins = {name: ("default" if get(name) is None
                          else "env file" if parsed is not None and name in parsed.entries
                          and name not in seen else "environment")
                   for name in (*VARIABLES, *FLAG_DEFAULTS)}
        migrations = get("OPSGATE_MIGRATIONS_DIR")
        if migrations is None:
            migrations, origins["OPSGATE_MIGRATIONS_DIR"] = default_migrations_dir()
        return cls(
            **_database_fields(get),
            **_service_fields(get),
            **_tool_fields(get),
            migrations_dir=migrations,
            flags=flags,
            source={k: shown(k, v) for k, v in env.items()
                    if k in VARIABLES or k in FLAG_DEFAULTS},
            origins=origins,
        )

    # -- questions the gate asks -------------------------------------------------

    @property
    def has_target(self) -> bool:
        """True when anything to check is configured; a gate with no target must fail."""
        return any(
            (self.database_url, self.ops_base_url, self.blob_read_write_token, self.blob_dir,
             self.vercel_token)
        )

    def is_set(self, variable: str) -> bool:
        if variable == "DATABASE_URL":
            return self.database_url is not None
        if variable == "BLOB_READ_WRITE_TOKEN" and self.blob_dir:
            return True  # the file backend needs no token
        value = self.source.get(variable)
        return value is not None and value.strip() != ""

    def require_database_url(self) -> SecretUrl:
        if self.database_url is None:
            raise MissingEnvError("DATABASE_URL", "the target database; POSTGRES_URL is also "
                                  "accepted")
        return self.database_url

    @property
    def database_url_pooled(self) -> bool:
        """Whether ``DATABASE_URL`` is (or must be treated as) a transaction pooler: as
        declared by OPSGATE_DATABASE_POOLED, else a Neon ``-pooler`` host."""
        if self.declared_pooled is not None:
            return self.declared_pooled
        return self.database_url is not None and is_pooler_host(self.database_url)

    def session_url(self, purpose: str) -> SecretUrl:
        """The URL for work that needs a real database session (a snapshot shared with
        pg_dump, CREATE/DROP DATABASE, a migration's long transaction): the direct
        endpoint when given, else ``DATABASE_URL`` if it is not a pooler.

        A pooled-only configuration fails here, in one line naming the variable to set,
        rather than half-way through the work with a pooler's error.
        """
        if self.database_url_unpooled is not None:
            return self.database_url_unpooled
        url = self.require_database_url()
        if self.database_url_pooled:
            why = ("OPSGATE_DATABASE_POOLED says so" if self.declared_pooled
                   else f"its host {host_of(url)} is a -pooler endpoint")
            raise SessionEndpointError(
                f"{purpose} needs a direct database session, but {self.database_url_variable} "
                f"is a transaction pooler ({why}); set DATABASE_URL_UNPOOLED (or "
                "POSTGRES_URL_NON_POOLING) to the direct endpoint, as `vercel env pull` "
                "writes it")
        return url

    def require_base_url(self) -> str:
        if self.ops_base_url is None:
            raise MissingEnvError("OPS_BASE_URL", "this check")
        return self.ops_base_url

    def require_admin_password(self) -> Secret:
        if self.admin_password is None:
            raise MissingEnvError("ADMIN_PASSWORD", "the admin API login")
        return self.admin_password

    def require_blob_token(self) -> Secret:
        if self.blob_read_write_token is None:
            raise MissingEnvError("BLOB_READ_WRITE_TOKEN", "the blob store")
        return self.blob_read_write_token

    def require_vercel_token(self) -> Secret:
        if self.vercel_token is None:
            raise MissingEnvError("VERCEL_TOKEN", "the Vercel REST API")
        return self.vercel_token

    def require_change_range(self) -> str:
        if self.change_range is None:
            raise MissingEnvError("OPSGATE_CHANGE_RANGE", "the change-control check, "
                                  "as base..head")
        return self.change_range

    def target_identity(self) -> dict[str, str | bool | None]:
        """The target as reports show it: no secret in any value."""
        return {
            "name": self.target_name or self._default_target_name(),
            "database": self.database_url.masked if self.database_url else None,
            "database_direct": (self.database_url_unpooled.masked
                                if self.database_url_unpooled else None),
            "database_pooled": self.database_url_pooled if self.database_url else None,
            "base_url": mask_url(self.ops_base_url) if self.ops_base_url else None,
            "blob_api": self.vercel_blob_api_url if self.blob_read_write_token else None,
            "storage_backend": self.admin_storage_backend,
        }

    def _default_target_name(self) -> str:
        for url in (
            self.database_url.reveal() if self.database_url else None,
            self.ops_base_url,
        ):
            if url:
                try:
                    host = urlsplit(url).hostname
                except ValueError:
                    host = None
                if host:
                    return host
        return "unnamed"

    def redactor(self) -> Redactor:
        """A redactor that knows every secret value of these settings."""
        r = Redactor()
        for s in (self.admin_password, self.blob_read_write_token, self.vercel_token):
            if s is not None:
                r.add(s.reveal())
        for u in (self.database_url, self.database_url_unpooled, self.drill_database_url):
            if u is not None:
                r.add(u.password)  # decoded, as tools and servers see it
                for part in secret_parts(u.reveal()):  # as written in the URL, too
                    r.add(part)
                r.add(u.reveal())
        if self.ops_base_url:
            for part in secret_parts(self.ops_base_url):
                r.add(part)
        return r


#: The settings of the run in progress, for code a run reaches without handing it its
#: `Settings` (see `in_effect`).
_IN_EFFECT: ContextVar[Settings | None] = ContextVar("opsgate_settings", default=None)


def bind(settings: Settings) -> Token[Settings | None]:
    """Make ``settings`` the ones `in_effect` gives, until `unbind` with the token."""
    return _IN_EFFECT.set(settings)


def unbind(token: Token[Settings | None]) -> None:
    _IN_EFFECT.reset(token)


@contextlib.contextmanager
def applied(settings: Settings) -> Iterator[Settings]:
    """`bind` for the length of a ``with`` block."""
    token = bind(settings)
    try:
        yield settings
    finally:
        unbind(token)


def in_effect() -> Settings:
    """The settings of the run in progress (bound by the migration runner for a run,
    and by the gate's plugin for a gate session), else the process environment's.

    For code a run reaches without being handed its `Settings`: a released migration's
    blob store (its HTTP time-out), a table hash's connections, the sandbox's
    PostgreSQL programs and cache. The run's env file then counts there too."""
    bound = _IN_EFFECT.get()
    return bound if bound is not None else Settings.load()
