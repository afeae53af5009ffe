"""``opsgate rollback``: the runbook's "Rollback and Recovery Procedure" as a guarded,
recorded command. Switching the app's admin storage to the blob fallback and back is an
env edit *and* a redeploy *and* a proof that the app now serves from the other backend;
each of those can fail unseen by hand, so each is a step here, checked and recorded.

Modules: `observe` (what is true now, read only), `deploy` (the Vercel writes and the
bounded wait for READY), `switch` (to-blob and to-neon on the operation skeleton),
`record` (the rollback record, the history line, the audit entries), `cli`.
"""
