"""`nbjobs report`: requested against used resources over finished jobs."""

from __future__ import annotations

import json

import click

from nbjobs.cli.main import main


@main.command()
@click.option(
    "--by", "by", type=click.Choice(["user", "tag", "notebook"]), default="user", show_default=True, help="Group by."
)
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON.")
def report(by: str, as_json: bool) -> None:
    """Requested vs used memory and CPU of finished jobs, per user, tag or notebook."""
    from nbjobs.config import Settings
    from nbjobs.resources.report import summarize
    from nbjobs.store import Store
    from nbjobs.terminal import print_usage_report

    store = Store(Settings.from_env().db_url)
    try:
        groups = summarize(store.usage(), by)  # type: ignore[arg-type]
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"by": by, "groups": [g.to_dict() for g in groups]}, indent=2))
    else:
        print_usage_report(groups, by)
