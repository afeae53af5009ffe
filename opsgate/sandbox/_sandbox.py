"""The sandbox: a complete, self-contained target built for one session, then torn down.

An embedded PostgreSQL cluster; every migration applied through the real runner with
``--apply`` (the admin state travels blob -> Postgres over the blob server's REST API,
as in production); the reference API and a Vercel-Blob-compatible server on
127.0.0.1. Its settings are written as a dotenv file, so checks receive them exactly as
they would receive a real target's.

Two profiles. ``plain``: one cluster, one URL, fastest. ``neon``: production's
topology (`NeonShapedTarget`): a TLS-only server, an owner role that is not a
superuser, PgBouncer in transaction mode in front, and an env file shaped like
``vercel env pull``'s (pooled ``DATABASE_URL``, direct ``DATABASE_URL_UNPOOLED``); the
reference API reads through the pooler, as the real app does.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsgate import envfile, progress, resources
from opsgate.clients import db
from opsgate.config import DEFAULT_BLOB_PREFIX, Settings
from opsgate.errors import OpsgateError
from opsgate.migrate.runner import EXIT_INTERRUPTED, run_migration
from opsgate.migrate.scripts import MigrationScript, discover_scripts
from opsgate.sandbox import datagen, own_times
from opsgate.sandbox.admin_backend import AdminBackend
from opsgate.sandbox.blob_server import BlobBucket, create_blob_app
from opsgate.sandbox.embedded import EmbeddedPostgres, binaries_identity, cache_dir
from opsgate.sandbox.neon_shape import NeonShapedTarget
from opsgate.sandbox.reference_app import Faults, create_app
from opsgate.sandbox.servers import ThreadedServer
from opsgate.sandbox.vercel_api import SandboxVercel, create_vercel_app
from opsgate.sensitive import Secret, SecretUrl
from opsgate.verify import canon

FIXTURE_PAYLOAD = resources.fixtures_dir() / "constellation.json"
FIXTURE_EXPECTATIONS = resources.fixtures_dir() / "expectations" / "sandbox.toml"
MIGRATIONS_DIR = resources.migrations_dir()
BLOB_STATE_MIGRATION = "20260211_1002_blob_to_neon_admin_state"
BACKFILL_MIGRATION = "20260213_1004_legacy_to_neon_kb_backfill"
PROFILES = ("plain", "neon")


def _bound_to_the_store(scripts: list[MigrationScript]) -> list[MigrationScript]:
    """The migrations whose ledger rows name the blob store's address: the first that
    writes outside the database (the blob fallback refresh's payload is the state *and
    where it goes*), and every one after it. A sandbox from the cache whose blob server
    could not take the template's port applies them again, so that re-applying them is
    a no-op, as on a freshly built sandbox."""
    first = next((i for i, s in enumerate(scripts) if s.target != "neon"), len(scripts))
    return scripts[first:]


def _forget_ledger_rows(db_url: SecretUrl, names: set[str]) -> None:
    """Delete the copied ledger rows of ``names``: they name the template's blob store,
    not this sandbox's, and a fresh build has one row per migration (the re-apply that
    follows writes this sandbox's own)."""
    with db.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM admin_migrations WHERE name = ANY(%s)", (sorted(names),))


def _summaries(template: Path) -> Path:
    """The migration summaries saved beside a seeded template."""
    return template.parent / (template.name + ".json")


#: Seeded templates kept (each about 30 MB): every change to the code or the migrations
#: makes a new one, so older ones are pruned once they are an hour old.
_KEEP_SEEDED = 3


def _prune_seeded(folder: Path) -> None:
    """Delete all but the newest seeded templates, sparing any younger than an hour (a
    process running other code may be copying one right now). Each entry is looked at
    once: another process's prune may remove one between the listing and the look
    (the self-tests' workers save and prune at once), and a sandbox's start must not
    fail over housekeeping."""
    import stat
    import time

    templates: list[tuple[float, Path]] = []
    for path in folder.iterdir():
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(info.st_mode) and not path.name.startswith("."):
            templates.append((info.st_mtime, path))
    templates.sort(reverse=True)
    for mtime, old in templates[_KEEP_SEEDED:]:
        if time.time() - mtime > 3600:
            _summaries(old).unlink(missing_ok=True)
            shutil.rmtree(old, ignore_errors=True)


class Sandbox:
    """Use `Sandbox.start()`; `stop()` is idempotent and leaves nothing running."""

    def __init__(self, root: Path, profile: str = "plain") -> None:
        if profile not in PROFILES:
            raise OpsgateError(f"unknown sandbox profile {profile!r}; use one of "
                               + ", ".join(PROFILES))
        self.root = root
        self.profile = profile
        self.pg: EmbeddedPostgres | None = None
        self.neon: NeonShapedTarget | None = None
        self.api: ThreadedServer | None = None
        self.blob: ThreadedServer | None = None
        self.vercel_server: ThreadedServer | None = None
        self.vercel: SandboxVercel | None = None
        self.vercel_token = Secret("sbx_vercel_" + secrets.token_urlsafe(18))
        self.faults = Faults()
        self.bucket = BlobBucket()
        self.admin_password = Secret("sbx-admin-" + secrets.token_urlsafe(12))
        self.blob_token = Secret("vercel_blob_rw_sbx_" + secrets.token_urlsafe(18))
        self.env_file = root / "sandbox.env"
        self.payload_file: Path | None = None
        self.scale: int | None = None
        #: The runner's summary of each migration's last application: this start's, or
        #: the template's for a sandbox from the cache.
        self.migrations: list[dict[str, Any]] = []
        #: The folder those migrations came from: the sandbox's ledger check reads it.
        self.migrations_dir: Path = MIGRATIONS_DIR
        #: When this sandbox started: the times its data shows (the ledger of a copy
        #: excepted, see `own_times`) are this or later.
        self.started_at = datetime.now(UTC)

    @classmethod
    def start(cls, scale: int | None = None, env_file: str | Path | None = None,
              migrations_dir: Path = MIGRATIONS_DIR, profile: str = "plain") -> Sandbox:
        if profile not in PROFILES:
            raise OpsgateError(f"unknown sandbox profile {profile!r}; use one of "
                               + ", ".join(PROFILES))
        sandbox = cls(Path(tempfile.mkdtemp(prefix="opsgate-sandbox-")), profile)
        if env_file is not None:
            sandbox.env_file = Path(env_file)
            if sandbox.env_file.exists():
                # The sandbox (and its watchdog) delete this file: never someone else's.
                shutil.rmtree(sandbox.root, ignore_errors=True)
                raise OpsgateError(f"{sandbox.env_file} already exists; give the sandbox "
                                   "a settings file of its own")
        try:
            sandbox._build(scale, migrations_dir)
        except BaseException:
            sandbox.stop()
            raise
        return sandbox

    def _build(self, scale: int | None, migrations_dir: Path) -> None:
        """The sandbox's stages, in order: database, blob store, a scaled payload,
        migrations (or a seeded copy's), then the app's and Vercel's servers."""
        self.migrations_dir = migrations_dir
        db_url, seeded = self._start_database(scale, migrations_dir)
        payload = json.loads(FIXTURE_PAYLOAD.read_text(encoding="utf-8"))
        content, history = datagen.admin_state(payload)
        # A copy of a sandbox migrated by the runner from these very migrations, fixtures
        # and code (see `_seeded_template`): its blob server takes the template's port
        # when it is free, so the ledger's blob refresh names this very store.
        saved = json.loads(_summaries(seeded).read_text()) if seeded is not None else {}
        blob = self._start_blob_store(content, history, int(saved.get("blob_port", 0)))
        source = self._scaled_payload(scale)
        db_url = self._migrate_or_reuse(source, scale, migrations_dir, seeded, saved, db_url,
                                        blob.port)
        self._start_app_servers(db_url)
        self._write_env_file()
        self.expected_admin_hash = canon.admin_state_hash(content, history)

    def _start_database(self, scale: int | None, migrations_dir: Path
                        ) -> tuple[SecretUrl, Path | None]:
        """The app's database, started (Neon-shaped, or a plain cluster copied from a
        seeded template when one is cached): its URL, and the template used, if any."""
        # Should this process die without stopping (SIGKILL), the cluster's watchdog also
        # deletes the sandbox's folder and its settings file, which holds passwords.
        leftovers = (self.root, self.env_file)
        # A scaled graph goes to disk, whatever the profile; fixture scale fits in memory
        # (`memory_folder`).
        base_dir = tempfile.gettempdir() if scale is not None else None
        if self.profile == "neon":
            self.neon = NeonShapedTarget(dbname="app", also_remove=leftovers,
                                         base_dir=base_dir)
            self.neon.start()
            self.pg = self.neon.cluster
            return self.neon.pooled_url, None
        self.pg = EmbeddedPostgres(also_remove=leftovers, base_dir=base_dir)
        seeded = self._seeded_template(scale, migrations_dir)
        if seeded is not None:
            self.pg.use_template(seeded)
        self.pg.start()
        db_url = (self.pg.url("app") if seeded is not None
                  else self.pg.create_database("app"))
        return db_url, seeded

    def _start_blob_store(self, content: Any, history: Any, port: int) -> ThreadedServer:
        """The blob server on ``port`` (0: any), holding the fixtures' admin state."""
        prefix = DEFAULT_BLOB_PREFIX
        self.blob = blob = ThreadedServer(
            lambda url: create_blob_app(self.blob_token, self.bucket, url, self.faults), "blob",
            port=port,
        ).start()
        self.bucket.put(prefix + "content-state.json", json.dumps(content).encode())
        self.bucket.put(prefix + "history.json", json.dumps(history).encode())
        return blob

    def _scaled_payload(self, scale: int | None) -> dict[str, str | None]:
        """With ``scale``, a generated payload of that size for the backfill migration:
        the migrations' sources."""
        source: dict[str, str | None] = {}
        if scale is not None:
            if scale < 1:
                raise OpsgateError("--sandbox-scale must be at least 1")
            self.scale = scale
            self.payload_file = self.root / f"constellation-{scale}.json"
            with self.payload_file.open("w", encoding="utf-8") as out:
                datagen.write_payload(out, scale)
            source[BACKFILL_MIGRATION] = str(self.payload_file)
        return source

    def _migrate_or_reuse(self, source: dict[str, str | None], scale: int | None,
                          migrations_dir: Path, seeded: Path | None, saved: dict[str, Any],
                          db_url: SecretUrl, blob_port: int) -> SecretUrl:
        """The migrations applied by the runner (and the result saved as a seeded
        template), or a seeded copy's taken over: the app's database URL afterwards.
        ``blob_port``: where this sandbox's blob store listens."""
        scripts = discover_scripts(migrations_dir)
        if seeded is not None:
            self.migrations = list(saved["migrations"])
            self._own_times()
            if blob_port != saved["blob_port"]:
                # Taken (by another sandbox from this template, say): the store has
                # another address, so what writes to it is applied again, to it. Each
                # migration's summary is then this start's.
                again = _bound_to_the_store(scripts)
                names = {s.name for s in again}
                self.migrations = [m for m in self.migrations if m.get("migration") not in names]
                _forget_ledger_rows(db_url, names)
                self._migrate(source, again)
            return db_url
        self._migrate(source, scripts)
        save_to = self._seeded_template(scale, migrations_dir, existing=False)
        if save_to is not None and self.pg is not None and self.neon is None:
            save_to.parent.mkdir(parents=True, exist_ok=True)
            _summaries(save_to).write_text(json.dumps(
                {"blob_port": blob_port, "migrations": self.migrations}))
            self.pg.save_as_template(save_to)
            db_url = self.pg.url("app")
            _prune_seeded(save_to.parent)
        return db_url

    def _start_app_servers(self, db_url: SecretUrl) -> None:
        """The reference app on the database, and the Vercel API of its deployment."""
        app_db = Secret(db_url.reveal())
        # The app stores admin state where its serving deployment's variables say.
        admin = AdminBackend(self.bucket, DEFAULT_BLOB_PREFIX, self._served_backend)
        self.api = ThreadedServer(
            lambda url: create_app(app_db, self.admin_password, self.faults, admin), "api"
        ).start()
        # The Vercel API of this deployment: its production domain is the API's address.
        self.vercel = SandboxVercel(self.vercel_token, self.api.url.split("://", 1)[1])
        vercel = self.vercel
        self.vercel_server = ThreadedServer(
            lambda url: create_vercel_app(vercel, self.faults), "vercel").start()

    def _own_times(self) -> None:
        """The times the template's build wrote, moved to this sandbox's start
        (`own_times`)."""
        window = own_times.build_window(self.migrations)
        if window is None or self.pg is None:
            return
        with self.pg.connect("app") as conn:
            own_times.move_to(conn, window, self.started_at)

    def _served_backend(self) -> str:
        return self.vercel.deploys.serving_backend() if self.vercel is not None else "neon"

    def _migrate(self, source: dict[str, str | None], scripts: list[MigrationScript]) -> None:
        if not scripts:
            return
        settings = Settings.load(environ=self._env_values())
        with progress.bar("sandbox: migrations", total=len(scripts)) as bar:
            for script in scripts:
                bar.phase(script.name)
                # Every migration from the legacy payload reads the scaled file, not the
                # fixture's copy in admin_content_state.
                given = source.get(BACKFILL_MIGRATION) if script.source == "legacy" else None
                result = run_migration(script, settings, apply=True, source=given,
                                       verbose=False)
                self.migrations.append(result.summary)
                if result.exit_code == EXIT_INTERRUPTED:
                    # The runner rolled back and answered; the build stops as stopped.
                    raise KeyboardInterrupt(f"sandbox migration {script.name}: interrupted")
                if result.exit_code != 0:
                    raise OpsgateError(f"sandbox migration {script.name}: {result.message}")
                bar.advance()

    def _seeded_template(self, scale: int | None, migrations_dir: Path,
                         existing: bool = True) -> Path | None:
        """Where a migrated fixture-scale sandbox cluster is cached, keyed by everything
        that shapes its data: the server, the migration scripts, the fixture payload and
        opsgate's own code. With ``existing``, only a complete cached one.

        Migrating takes most of a sandbox's start; the result is the same for the same
        inputs, so a plain fixture-scale sandbox starts from a copy of the first one
        built (the runner applied every migration for real, once). Scaled and
        ``neon`` sandboxes are always built."""
        cache = cache_dir()
        if cache is None or scale is not None or self.pg is None or self.neon is not None:
            return None
        digest = hashlib.sha256()
        code = Path(__file__).resolve().parent.parent
        inputs = [*sorted(migrations_dir.glob("*.py")), FIXTURE_PAYLOAD,
                  *sorted(code.rglob("*.py"))]
        for path in inputs:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        digest.update(binaries_identity(self.pg.binaries).encode())
        path = (cache / "sandboxes"
                / f"{self.pg.binaries.version}-{digest.hexdigest()[:16]}")
        if not existing:
            return path
        complete = (path / "PG_VERSION").exists() and _summaries(path).exists()
        return path if complete else None

    def _env_values(self) -> dict[str, str]:
        pg, blob = self.pg, self.blob
        if pg is None or blob is None:
            raise OpsgateError("the sandbox is not running (started by Sandbox.start, "
                               "until stop)")
        values = (self.neon.vercel_env() if self.neon is not None
                  else {"DATABASE_URL": pg.url("app").reveal()})
        values.update({
            "ADMIN_PASSWORD": self.admin_password.reveal(),
            "ADMIN_STORAGE_BACKEND": "neon",
            "BLOB_READ_WRITE_TOKEN": self.blob_token.reveal(),
            "VERCEL_BLOB_API_URL": blob.url,
            "ADMIN_BLOB_PREFIX": DEFAULT_BLOB_PREFIX,
            "OPSGATE_PG_BINDIR": str(pg.binaries.bindir),
            "OPSGATE_TARGET_NAME": "sandbox" if self.neon is None else "sandbox-neon",
            # What the ledger check compares with is what this sandbox applied, whatever
            # folder of scripts the current directory holds.
            "OPSGATE_MIGRATIONS_DIR": str(self.migrations_dir),
        })
        if self.neon is not None:
            # The pooler's host is 127.0.0.1, not a *-pooler name: say what it is.
            values["OPSGATE_DATABASE_POOLED"] = "true"
        if self.api is not None:
            values["OPS_BASE_URL"] = self.api.url
        if self.vercel is not None and self.vercel_server is not None:
            values.update(self.vercel.env_values())
            values["VERCEL_API_URL"] = self.vercel_server.url
        if self.payload_file is not None:
            values["OPSGATE_LEGACY_PAYLOAD_FILE"] = str(self.payload_file)
            values["OPSGATE_TARGET_NAME"] += f"-scale-{self.scale}"
        else:
            # Fixture scale: the committed expectations hold (a scaled graph has its own
            # counts, so it is held to the built-in floors instead).
            values["OPSGATE_EXPECTATIONS_FILE"] = str(FIXTURE_EXPECTATIONS)
        return values

    def environ(self) -> dict[str, str]:
        """The target's variables, revealed: for a child process or `Settings.load`."""
        return self._env_values()

    def _write_env_file(self) -> None:
        lines = [f"# opsgate sandbox target ({self.profile} profile); read with: "
                 "pytest --env-file=THIS_FILE"]
        values = self._env_values()
        lines += [f'{k}="{v}"' for k, v in values.items()]
        text = "\n".join(lines) + "\n"
        # Read back as the app (and opsgate) read env files: a value with a "$", a quote
        # or a "\n" in it would come back changed, and the sandbox would say one thing
        # and serve another. Today's values are URL-safe; this keeps them honest.
        back = envfile.parse(text, "the sandbox's env file").values({})
        changed = sorted(k for k, v in values.items() if back.get(k) != v)
        if changed:
            raise OpsgateError("the sandbox's env file would not read back as written: "
                               + ", ".join(changed))
        # Created 0600 and exclusively: secrets are never readable by others, not even
        # for a moment, and an existing file is never overwritten.
        fd = os.open(self.env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)

    def stop(self) -> None:
        servers = [s for s in (self.api, self.blob, self.vercel_server) if s is not None]
        for server in servers:
            server.signal_stop()
        for server in servers:
            server.stop()
        self.api = self.blob = self.vercel_server = None
        if self.neon is not None:
            self.neon.stop()
            self.neon = None
        elif self.pg is not None:
            self.pg.stop()
        self.pg = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
