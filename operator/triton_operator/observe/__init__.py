"""Pure functions from observed objects (API dicts, Triton answers) to status facts."""
