"""The clients opsgate talks to the target with: database sessions, HTTP, the Vercel API,
the blob store, PostgreSQL tools; and the data contract they read and write."""
