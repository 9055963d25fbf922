"""The command line: a thin layer over `nbjobs.api`, one module per family of commands."""

from nbjobs.cli import jobs, report  # noqa: F401  (register their commands)
from nbjobs.cli.main import main

__all__ = ["main"]
