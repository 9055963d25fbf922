"""The command line: a thin layer over `nbjobs.api`, one module per family of commands."""

from __future__ import annotations

import os
import sys

from nbjobs.cli import jobs, people, pipelines, report, reproduce, schedules, server, sweeps, worker  # noqa: F401  (each registers its commands)
from nbjobs.cli.main import main

__all__ = ["entry", "main"]


def entry() -> None:
    """The `nbjobs` executable: `main`, then a fast exit.

    Interpreter shutdown (tearing down a few hundred modules, zmq and SQLite
    objects) adds ~0.2 s to every command; everything we own is closed by now,
    so flush and leave at once.
    """
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
