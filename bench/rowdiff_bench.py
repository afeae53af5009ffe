"""Locating 10 changed rows between two 1M-row tables on two databases: opsgate's row
diff against reladiff (if installed in its own environment; pass --reladiff PATH).

    python -m bench.rowdiff_bench [--rows 1000000] [--reps 3] [--reladiff /path/to/reladiff]

Integer keys, because reladiff bisects numeric key ranges; the table is shaped like
kb_entities (a title, a summary of realistic length, a float and a timestamp).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from datetime import UTC, datetime
from typing import Any

from bench.run import RESULTS, measure
from opsgate.sandbox.embedded import EmbeddedPostgres
from opsgate.sensitive import SecretUrl

CHANGED = (11, 98_765, 123_457, 250_001, 333_333, 500_000, 611_111, 777_777, 888_888, 999_999)


def build(pg: EmbeddedPostgres, rows: int) -> tuple[str, str]:
    urls = []
    for name in ("rd_source", "rd_restore"):
        url = pg.create_database(name)
        with pg.connect(name, autocommit=True) as conn:
            conn.execute("CREATE TABLE things (id bigint PRIMARY KEY, title text, summary text, "
                         "score double precision, updated_at timestamptz)")
            conn.execute(
                "INSERT INTO things SELECT g, 'title ' || g, repeat(md5(g::text), 6), g / 7.0, "
                "'2026-01-01'::timestamptz + g * interval '1 second' "
                "FROM generate_series(1, %s) g", (rows,))
            conn.execute("VACUUM ANALYZE things")
        urls.append(url.reveal())
    with pg.connect("rd_restore", autocommit=True) as conn:
        conn.execute("UPDATE things SET title = title || ' (doctored)' WHERE id = ANY(%s)",
                     (list(CHANGED),))
    return urls[0], urls[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--reladiff", default=None)
    args = p.parse_args()
    with EmbeddedPostgres() as pg:
        a, b = build(pg, args.rows)
        env = dict(os.environ, BENCH_URL=a, BENCH_URL_B=b)
        ours_cmd = (["python", "-m", "bench.tasks", "opsgate_rowdiff",
                     json.dumps({"table": "things"})], env)
        # The password travels in PGPASSWORD (libpq reads it), never on a command line.
        password = SecretUrl(a).password or ""
        theirs_cmd = ([args.reladiff, SecretUrl(a).without_password, "things",
                       SecretUrl(b).without_password, "things", "-k", "id", "-c", "title",
                       "-c", "summary", "-c", "score", "-c", "updated_at"],
                      dict(env, PGPASSWORD=password))
        # Taking turns (ours, reladiff, ours, ...): a change in the machine's load hits both.
        runs: list[list[dict[str, Any]]] = [[], []]
        for _ in range(args.reps):
            runs[0].append(measure(*ours_cmd))
            if args.reladiff:
                runs[1].append(measure(*theirs_cmd))
        found = runs[0][-1]["out"]["changed"]
        assert sorted(found) == sorted(c for c in CHANGED if c <= args.rows), found
        rows: list[dict[str, Any]] = [{"tool": "opsgate rowdiff.locate", "runs": runs[0]}]
        if args.reladiff:
            rows.append({"tool": "reladiff (hashdiff, cross-database)", "runs": runs[1]})
    out = {"rows": args.rows, "changed": len(CHANGED), "results": []}
    for r in rows:
        walls = [x["wall_s"] for x in r["runs"]]
        out["results"].append({"tool": r["tool"], "median_s": statistics.median(walls),
                               "min_s": min(walls), "max_s": max(walls),
                               "rss_mib": max(x["rss_mib"] for x in r["runs"]),
                               "walls_s": walls})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stamp}-rowdiff-{args.rows}.json").write_text(json.dumps(out, indent=2))
    lines = [f"## Locating {len(CHANGED)} changed rows in {args.rows:,}-row tables", "",
             "| tool | median s | min–max s | client RSS MiB |", "|---|---|---|---|"]
    for r in out["results"]:
        lines.append(f"| {r['tool']} | {r['median_s']:.2f} | {r['min_s']:.2f}–{r['max_s']:.2f} "
                     f"| {r['rss_mib']:.0f} |")
    if len(out["results"]) == 2:
        ratio = out["results"][0]["median_s"] / out["results"][1]["median_s"]
        lines.append(f"\nRatio opsgate/reladiff: {ratio:.2f}x (target <= 0.5x: "
                     f"{'met' if ratio <= 0.5 else 'missed'}).")
    (RESULTS / "rowdiff.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
