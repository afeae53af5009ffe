"""Change control (runbook "Change control"): every migration script added or changed in
a git range comes with its migration-index entry, its changelog entry and its checkpoint
entry in the same range.

"Mentions it" means: an added line of that file, in the range's diff, names the
migration (its file name without ``.py``). A file that merely already names it does not
count: the entry must come with the change.

git runs as a child process. Four plumbing commands (``rev-parse``, ``rev-list``,
``diff``, ``merge-base``) are all this needs, and git itself is what CI checks out with;
a Python git library would add a dependency (and, for the pure ones, a second reading of
git's object store) for no gain. Only revisions and paths reach its command line, never
a secret, and its environment is reduced to what git needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsgate.errors import ChangeRangeError, first_line

GIT_TIMEOUT_S = 60
#: Commits listed in the evidence; the count is always complete.
MAX_COMMITS_SHOWN = 50
RANGE_VARIABLE = "OPSGATE_CHANGE_RANGE"
REPO_VARIABLE = "OPSGATE_CHANGE_REPO"


@dataclass(frozen=True)
class ChangePaths:
    """Where things live, relative to the repository's top (git pathspecs)."""

    migrations: str
    index: str
    changelog: str
    checkpoint: str

    def documents(self) -> dict[str, str]:
        return {"index": self.index, "changelog": self.changelog,
                "checkpoint": self.checkpoint}


@dataclass
class MigrationChange:
    name: str
    path: str
    status: str  # added / modified / deleted
    mentioned_in: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass
class ChangeReview:
    """What one range holds, and what it lacks."""

    range: str
    repo: str
    base: str
    head: str
    merge_base: str
    commits: list[str]
    migrations: list[MigrationChange]
    paths: ChangePaths

    def problems(self) -> list[str]:
        """One line per cause; empty when the range passes change control."""
        if not self.commits:
            return [f"{RANGE_VARIABLE}={self.range!r} holds no commit "
                    f"({self.base[:12]} is already {self.head[:12]} or after it): nothing "
                    "was inspected, so nothing is shown to be under change control"]
        lines = []
        for m in self.migrations:
            if m.missing:
                lines.append(f"migration {m.name} ({m.status} in {m.path}) lacks "
                              + ", ".join(m.missing) + " in the same range")
        return lines

    def evidence(self) -> ChangeControlEvidence:
        return ChangeControlEvidence(self)


@dataclass(frozen=True)
class ChangeControlEvidence:
    """change_control: the range and the commits inspected, the documents looked in,
    each migration script added, changed or deleted with where it is mentioned and
    where it is missing, and a note when the range changed no migration."""

    review: ChangeReview

    @property
    def note(self) -> str | None:
        if self.review.migrations:
            return None
        return (f"no migration script added or changed in "
                f"{len(self.review.commits)} commit(s)")

    def as_json(self) -> dict[str, Any]:
        r = self.review
        out: dict[str, Any] = {
            "range": r.range,
            "repo": r.repo,
            "base": r.base,
            "head": r.head,
            "merge_base": r.merge_base,
            "commits_inspected": len(r.commits),
            "commits": r.commits[:MAX_COMMITS_SHOWN],
            "paths": {"migrations": r.paths.migrations, **r.paths.documents()},
            "migrations_changed": len([m for m in r.migrations if m.status != "deleted"]),
            "migrations": [
                {"name": m.name, "path": m.path, "status": m.status,
                 "mentioned_in": m.mentioned_in, "missing": m.missing}
                for m in r.migrations
            ],
        }
        if self.note is not None:
            out["note"] = self.note
        return out


def _git_env() -> dict[str, str]:
    """git's environment: enough to find itself and the user's config, nothing of the
    gate's variables (tokens, database URLs), no prompt, stable messages."""
    keep = ("PATH", "HOME", "SYSTEMROOT", "TMPDIR", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update({"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"})
    return env


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    git = shutil.which("git")
    if git is None:
        raise ChangeRangeError("change control needs the git program, and none is on PATH")
    try:
        return subprocess.run([git, "-C", str(repo), "-c", "core.quotepath=off", *args],
                              capture_output=True, text=True, errors="replace",
                              env=_git_env(), timeout=GIT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ChangeRangeError(f"git {args[0]} in {repo} did not finish in "
                               f"{GIT_TIMEOUT_S} s") from None


def _git_ok(repo: Path, *args: str) -> str:
    done = _git(repo, *args)
    if done.returncode != 0:
        raise ChangeRangeError(f"git {args[0]} in {repo} failed: "
                               f"{first_line(done.stderr) or f'exit {done.returncode}'}")
    return done.stdout


def find_repo(given: str | None, cwd: Path) -> Path:
    """The repository's top folder: ``given`` (OPSGATE_CHANGE_REPO) or the one ``cwd``
    is in."""
    where = Path(given) if given else cwd
    if not where.is_dir():
        raise ChangeRangeError(f"{REPO_VARIABLE}={given!r} is not a folder")
    done = _git(where, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        if given:
            raise ChangeRangeError(f"{REPO_VARIABLE}={given!r} is not in a git repository")
        raise ChangeRangeError(f"the current directory {where} is not in a git repository; "
                               f"set {REPO_VARIABLE} to the repository to inspect")
    return Path(done.stdout.strip())


def split_range(text: str) -> tuple[str, str]:
    """``base..head`` (or ``base...head``, the same here: the commits of head that base
    lacks, changes since their merge base) as (base, head)."""
    sep = "..." if "..." in text else ".."
    base, found, head = text.partition(sep)
    base, head = base.strip(), head.strip()
    if not found or not base or not head:
        raise ChangeRangeError(f"{RANGE_VARIABLE}={text!r} is not a range; write base..head "
                               "(two revisions, e.g. origin/main..HEAD)")
    for rev in (base, head):
        if rev.startswith("-") or any(c.isspace() for c in rev):
            raise ChangeRangeError(f"{RANGE_VARIABLE}={text!r}: {rev!r} is not a revision")
    return base, head


def _resolve(repo: Path, rev: str, text: str) -> str:
    done = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options",
                f"{rev}^{{commit}}")
    if done.returncode != 0:
        raise ChangeRangeError(
            f"{RANGE_VARIABLE}={text!r}: unknown revision {rev!r} in {repo} (a shallow CI "
            "checkout lacks the base: fetch it, e.g. fetch-depth 0)")
    return done.stdout.strip()


#: Script suffixes: opsgate's runner runs ``.py``; the web app's own repository keeps its
#: migrations as npm scripts (the runbook's ``scripts/migrations/``).
SCRIPT_SUFFIXES = frozenset({".py", ".js", ".mjs", ".cjs", ".ts", ".mts", ".sql", ".sh"})


def _is_migration(path: str, folder: str) -> bool:
    """The runner's rule (`opsgate.migrate.scripts.discover_scripts`), widened to the
    app's script languages: a script directly in the migrations folder whose name does
    not start with ``_`` (helpers) or ``.``; a README there is no migration."""
    p = Path(path)
    return (p.parent == Path(folder.rstrip("/") or ".") and p.suffix in SCRIPT_SUFFIXES
            and not p.name.startswith(("_", ".")))


def _added_lines(repo: Path, old: str, new: str, pathspec: str) -> list[str]:
    out = _git_ok(repo, "diff", "--no-color", "--no-ext-diff", "--no-renames", "-U0",
                  old, new, "--", pathspec)
    return [line[1:] for line in out.splitlines()
            if line.startswith("+") and not line.startswith("+++")]


_STATUS = {"A": "added", "M": "modified", "T": "modified", "D": "deleted"}


def review(range_text: str, paths: ChangePaths, repo_given: str | None = None,
           cwd: Path | None = None) -> ChangeReview:
    """Inspect ``range_text`` in the repository; raises `ChangeRangeError` when it cannot
    be inspected at all (the check then fails with that one line)."""
    repo = find_repo(repo_given, cwd or Path.cwd())
    base_rev, head_rev = split_range(range_text)
    base = _resolve(repo, base_rev, range_text)
    head = _resolve(repo, head_rev, range_text)
    commits = [line for line in _git_ok(
        repo, "log", "--no-color", "--format=%h %s", f"{base}..{head}").splitlines() if line]
    found_base = _git(repo, "merge-base", base, head)
    if found_base.returncode != 0:
        raise ChangeRangeError(f"{RANGE_VARIABLE}={range_text!r}: {base_rev} and {head_rev} "
                               "share no history (no merge base)")
    merge_base = found_base.stdout.strip()
    changed = _git_ok(repo, "diff", "--no-renames", "--name-status", "-z", merge_base, head,
                      "--", paths.migrations.rstrip("/") or ".")
    fields = changed.split("\0")
    migrations: list[MigrationChange] = []
    for status, path in zip(fields[0::2], fields[1::2], strict=False):
        if status and path and _is_migration(path, paths.migrations):
            migrations.append(MigrationChange(Path(path).stem, path,
                                              _STATUS.get(status[0], status)))
    needed = [m for m in migrations if m.status != "deleted"]
    if needed:
        for role, spec in paths.documents().items():
            added = _added_lines(repo, merge_base, head, spec)
            for m in needed:
                if any(m.name in line for line in added):
                    m.mentioned_in.append(role)
                else:
                    m.missing.append(f"{role} ({spec})")
    return ChangeReview(range_text, str(repo), base, head, merge_base, commits,
                        migrations, paths)

