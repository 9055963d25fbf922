"""The command line: a thin layer over `nbjobs.api`, one module per family of commands."""

from nbjobs.cli import jobs, server, worker  # noqa: F401  (each registers its commands)
from nbjobs.cli.main import main

__all__ = ["main"]
