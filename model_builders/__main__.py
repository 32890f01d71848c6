"""`python -m model_builders`."""

from model_builders.cli import main

raise SystemExit(main())
