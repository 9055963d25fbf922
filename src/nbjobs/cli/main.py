"""The `nbjobs` command group; each command module adds its commands to it.

Usage errors print one paragraph and exit 2 without a traceback; a finished job
exits with the code of its end state (see `nbjobs.spec.EXIT_CODES`).
"""

from __future__ import annotations

from typing import Any

import click

from nbjobs.errors import InvalidInput
from nbjobs.spec import EXIT_INVALID_INPUT


class NbjobsGroup(click.Group):
    """Turns InvalidInput into a one-paragraph message and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InvalidInput as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(EXIT_INVALID_INPUT)


@click.group(cls=NbjobsGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="nbjobs")
def main() -> None:
    """Run Jupyter notebooks as recorded jobs."""


def server_request(method: str, path: str, **kwargs: Any) -> Any:
    """One request to the server the CLI finds (see nbjobs.client); InvalidInput when none answers."""
    from nbjobs.client import Client

    with Client() as client:
        return client.request(method, path, **kwargs)
