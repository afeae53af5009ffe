"""Reports of a gate run, for CI and auditors (docs/reports.md)."""
