"""The guarded production-to-local refresh (``opsgate refresh``).

The runbook: "Production-to-local refreshes must export BOTH environments before
mutating local, verify expected production markers, and avoid production writes unless
separately approved." Each clause is a step of `opsgate.refresh.run.refresh`, which
runs on `opsgate.operation`'s skeleton. Modules: ``identity`` (which database a URL is,
production signs), ``markers`` (the source's expectations), ``archive``
(pg_dump/pg_restore), ``summary`` (the documented summary), ``run`` (the stages),
``cli``.
"""
