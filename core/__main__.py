"""`python -m core`: the operators' command line (core/cli.py)."""

from core.cli import main

raise SystemExit(main())
