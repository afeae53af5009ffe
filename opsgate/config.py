"""The environment contract (DESIGN.md "Environment contract") in one place.

`Settings.load()` merges an optional env file (such as the one ``vercel env pull``
writes), read as the app's ``@next/env`` reads it (`opsgate.envfile`), under the process
environment: a variable already in the environment wins.
Secrets are wrapped at the moment they are read, so nothing downstream ever holds a
printable copy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from opsgate import envfile, resources
from opsgate.errors import ConfigError, MissingEnvError, SessionEndpointError
from opsgate.sensitive import MASK, Redactor, Secret, SecretUrl, mask_url, secret_parts
from opsgate.target.db import host_of, is_pooler_host

TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no"})

DEFAULT_BLOB_PREFIX = "admin/"
DEFAULT_BLOB_API_URL = "https://blob.vercel-storage.com"
DEFAULT_VERCEL_API_URL = "https://api.vercel.com"
DEFAULT_VERCEL_PROJECT_FILE = ".vercel/project.json"
#: Where change control looks, relative to the repository's top (docs/checks.md).
DEFAULT_CHANGE_MIGRATIONS = "migrations/"
DEFAULT_CHANGE_INDEX = "docs/migrations.md"
DEFAULT_CHANGE_CHANGELOG = "CHANGELOG.md"
DEFAULT_CHANGE_CHECKPOINT = "docs/checkpoints.md"

#: Every variable opsgate reads, with what it is for (shown by ``opsgate env``-style
#: help and checked by the docs test).
VARIABLES: dict[str, str] = {
    "DATABASE_URL": "target database (wins over POSTGRES_URL); on Neon via Vercel the "
    "POOLED endpoint",
    "POSTGRES_URL": "target database, when DATABASE_URL is not set",
    "DATABASE_URL_UNPOOLED": "the DIRECT endpoint, for work that needs a session (drill, "
    "migrations, scratch databases); wins over POSTGRES_URL_NON_POOLING",
    "POSTGRES_URL_NON_POOLING": "the direct endpoint, when DATABASE_URL_UNPOOLED is not set",
    "OPSGATE_DATABASE_POOLED": "true when DATABASE_URL is a transaction pooler whose host "
    "does not end in -pooler (default: judged from the host)",
    "OPSGATE_STATEMENT_TIMEOUT": "seconds a migration statement may run (default 0: the "
    "server's own setting)",
    "OPS_BASE_URL": "base URL of the deployment",
    "ADMIN_PASSWORD": "admin API login (secret)",
    "ADMIN_STORAGE_BACKEND": "must be 'neon' in production",
    "BLOB_READ_WRITE_TOKEN": "Vercel Blob token (secret)",
    "ADMIN_BLOB_PREFIX": f"blob prefix of the admin state, default {DEFAULT_BLOB_PREFIX!r}",
    "VERCEL_BLOB_API_URL": "Vercel Blob API base, default Vercel's",
    "BACKUP_OUTPUT_PATH": "where the drill's backup archive is written (kept)",
    "DRILL_DATABASE_URL": "an empty database the drill restores into (wins over "
    "OPSGATE_DRILL_RESTORE)",
    "OPSGATE_DRILL_RESTORE": "where the drill restores its copy: 'local' (default: a "
    "throwaway PostgreSQL on this machine) or 'target-scratch' (a scratch database on "
    "the target server)",
    "OPSGATE_PG_BINDIR": "folder of pg_dump/pg_restore to use (default: discovered)",
    "OPSGATE_TARGET_NAME": "name of the target in reports (default: the database host)",
    "OPSGATE_LEGACY_PAYLOAD_FILE": "legacy payload file for knowledge drift "
    "(default: admin_content_state key 'constellation')",
    "OPSGATE_MIGRATIONS_DIR": "folder of migration scripts (default: the runbook's, "
    "shipped with opsgate)",
    "OPSGATE_HTTP_TIMEOUT": "seconds per HTTP attempt (default 15)",
    "OPSGATE_HASH_CONNECTIONS": "connections a large table's canon-v1 hash reads with, "
    "sharing one snapshot (default 2; 1: one COPY)",
    "OPSGATE_BLOB_DIR": "read the blob layout from this folder (the 'file' backend)",
    "OPSGATE_EXPECTATIONS_FILE": "expected production markers (TOML: floors, domains, "
    "migrations, pinned hashes); default: built-in floors",
    "VERCEL_TOKEN": "Vercel REST API token for the deployment check (secret)",
    "VERCEL_PROJECT_ID": "the Vercel project the deployment check inspects (default: "
    "projectId of .vercel/project.json)",
    "VERCEL_ORG_ID": "the project's team or account id, sent as teamId (default: orgId of "
    ".vercel/project.json)",
    "VERCEL_API_URL": f"Vercel REST API base, default {DEFAULT_VERCEL_API_URL}",
    "OPSGATE_VERCEL_PROJECT_FILE": "the project link file, default .vercel/project.json "
    "in the current directory",
    "OPSGATE_CHANGE_RANGE": "git range the change-control check inspects, base..head",
    "OPSGATE_CHANGE_REPO": "git repository of the change-control check (default: the "
    "current directory's)",
    "OPSGATE_CHANGE_MIGRATIONS": f"where migration scripts live, default "
    f"{DEFAULT_CHANGE_MIGRATIONS!r}",
    "OPSGATE_CHANGE_INDEX": f"the migration index, default {DEFAULT_CHANGE_INDEX!r}",
    "OPSGATE_CHANGE_CHANGELOG": f"the changelog, default {DEFAULT_CHANGE_CHANGELOG!r}",
    "OPSGATE_CHANGE_CHECKPOINT": f"the checkpoint log, default {DEFAULT_CHANGE_CHECKPOINT!r}",
}

#: The gate flags and their defaults (DESIGN.md).
FLAG_DEFAULTS: dict[str, bool] = {
    "RUN_OPS_PREFLIGHT": True,
    "RUN_OPS_PARITY": True,
    "RUN_OPS_LEDGER": True,
    "RUN_OPS_NEON_DRILL": False,
    "RUN_OPS_BLOB_FALLBACK": False,
    "RUN_OPS_KNOWLEDGE_DRIFT": False,
    "RUN_OPS_HEALTH": False,
    "RUN_OPS_DEPLOYMENT": False,
    "RUN_OPS_CHANGE_CONTROL": False,
}


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


def http_timeout_from_environment() -> float | None:
    """``OPSGATE_HTTP_TIMEOUT`` from the process environment, for HTTP clients made
    without `Settings`; None when unset (the client's default)."""
    raw = os.environ.get("OPSGATE_HTTP_TIMEOUT")
    return None if raw is None else _positive_float("OPSGATE_HTTP_TIMEOUT", raw, 15.0)


#: Variables whose whole value is a secret; URL variables keep their host, not password.
SECRET_VARIABLES = frozenset({"ADMIN_PASSWORD", "BLOB_READ_WRITE_TOKEN", "VERCEL_TOKEN"})
URL_VARIABLES = frozenset({"DATABASE_URL", "POSTGRES_URL", "DATABASE_URL_UNPOOLED",
                           "POSTGRES_URL_NON_POOLING", "DRILL_DATABASE_URL"})


def _shown(name: str, value: str) -> str:
    """How `Settings.source` keeps a variable: never a secret's value (``source`` is
    for "is it set?" questions and may end up in a repr or a report)."""
    if name in SECRET_VARIABLES:
        return MASK if value.strip() else value
    if name in URL_VARIABLES or name == "OPS_BASE_URL":
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


@dataclass(frozen=True)
class Settings:
    """What one run knows about its target. Build it with `Settings.load`."""

    database_url: SecretUrl | None = None
    database_url_variable: str | None = None
    database_url_unpooled: SecretUrl | None = None
    database_url_unpooled_variable: str | None = None
    declared_pooled: bool | None = None
    statement_timeout: float = 0.0
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
    target_name: str | None = None
    legacy_payload_file: str | None = None
    migrations_dir: str = field(default_factory=lambda: str(resources.migrations_dir()))
    http_timeout: float = 15.0
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

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        env_file: str | os.PathLike[str] | None = None,
        *,
        file_wins: bool = False,
    ) -> Settings:
        """Merge ``env_file`` under ``environ`` (default ``os.environ``) and parse it.

        ``file_wins`` is for the sandbox's own file: its target variables then override
        the environment (a stray DATABASE_URL must never redirect a sandbox run), while
        the RUN_OPS_* flags still come from the environment.
        """
        outer = os.environ if environ is None else environ
        env: dict[str, str] = dict(outer)
        if env_file is not None:
            parsed = parse_env_file(env_file)
            # Expansion sees the environment the file is merged under, as in the app; a
            # file that wins is expanded as if the environment did not set its keys.
            seen = outer if not file_wins else {
                k: v for k, v in outer.items() if k in FLAG_DEFAULTS or k not in parsed.entries}
            env.update(parsed.values(seen))

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() != "" else None

        db_var = "DATABASE_URL" if get("DATABASE_URL") else (
            "POSTGRES_URL" if get("POSTGRES_URL") else None
        )
        db_url = get(db_var) if db_var else None
        direct_var = "DATABASE_URL_UNPOOLED" if get("DATABASE_URL_UNPOOLED") else (
            "POSTGRES_URL_NON_POOLING" if get("POSTGRES_URL_NON_POOLING") else None
        )
        direct_url = get(direct_var) if direct_var else None
        pooled_raw = get("OPSGATE_DATABASE_POOLED")
        flags = {name: parse_flag(name, env.get(name), d) for name, d in FLAG_DEFAULTS.items()}
        password = get("ADMIN_PASSWORD")
        token = get("BLOB_READ_WRITE_TOKEN")
        drill = get("DRILL_DATABASE_URL")
        base = get("OPS_BASE_URL")
        vercel_token = get("VERCEL_TOKEN")
        return cls(
            database_url=SecretUrl(db_url) if db_url else None,
            database_url_variable=db_var,
            database_url_unpooled=SecretUrl(direct_url) if direct_url else None,
            database_url_unpooled_variable=direct_var,
            declared_pooled=(parse_flag("OPSGATE_DATABASE_POOLED", pooled_raw, False)
                             if pooled_raw is not None else None),
            statement_timeout=_positive_float(
                "OPSGATE_STATEMENT_TIMEOUT", get("OPSGATE_STATEMENT_TIMEOUT"), 0.0, zero=True),
            ops_base_url=base.rstrip("/") if base else None,
            admin_password=Secret(password) if password else None,
            admin_storage_backend=get("ADMIN_STORAGE_BACKEND"),
            blob_read_write_token=Secret(token) if token else None,
            admin_blob_prefix=get("ADMIN_BLOB_PREFIX") or DEFAULT_BLOB_PREFIX,
            vercel_blob_api_url=(get("VERCEL_BLOB_API_URL") or DEFAULT_BLOB_API_URL).rstrip("/"),
            backup_output_path=get("BACKUP_OUTPUT_PATH"),
            drill_database_url=SecretUrl(drill) if drill else None,
            drill_restore=_drill_restore(get("OPSGATE_DRILL_RESTORE")),
            pg_bindir=get("OPSGATE_PG_BINDIR"),
            target_name=get("OPSGATE_TARGET_NAME"),
            legacy_payload_file=get("OPSGATE_LEGACY_PAYLOAD_FILE"),
            migrations_dir=get("OPSGATE_MIGRATIONS_DIR") or str(resources.migrations_dir()),
            http_timeout=_positive_float("OPSGATE_HTTP_TIMEOUT", get("OPSGATE_HTTP_TIMEOUT"), 15.0),
            blob_dir=get("OPSGATE_BLOB_DIR"),
            expectations_file=get("OPSGATE_EXPECTATIONS_FILE"),
            vercel_token=Secret(vercel_token) if vercel_token else None,
            vercel_project_id=get("VERCEL_PROJECT_ID"),
            vercel_org_id=get("VERCEL_ORG_ID"),
            vercel_api_url=(get("VERCEL_API_URL") or DEFAULT_VERCEL_API_URL).rstrip("/"),
            vercel_project_file=(get("OPSGATE_VERCEL_PROJECT_FILE")
                                 or DEFAULT_VERCEL_PROJECT_FILE),
            change_range=get("OPSGATE_CHANGE_RANGE"),
            change_repo=get("OPSGATE_CHANGE_REPO"),
            change_migrations=get("OPSGATE_CHANGE_MIGRATIONS") or DEFAULT_CHANGE_MIGRATIONS,
            change_index=get("OPSGATE_CHANGE_INDEX") or DEFAULT_CHANGE_INDEX,
            change_changelog=get("OPSGATE_CHANGE_CHANGELOG") or DEFAULT_CHANGE_CHANGELOG,
            change_checkpoint=get("OPSGATE_CHANGE_CHECKPOINT") or DEFAULT_CHANGE_CHECKPOINT,
            flags=flags,
            source={k: _shown(k, v) for k, v in env.items()
                    if k in VARIABLES or k in FLAG_DEFAULTS},
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
