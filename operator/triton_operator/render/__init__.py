"""Pure functions turning typed specs into Kubernetes manifest dicts (no I/O, no kopf)."""
