"""Commands for people: users, tokens, secrets, webhooks, and the demo server."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from nbjobs.cli.main import main, server_request
from nbjobs.errors import InvalidInput
from nbjobs.spec import WEBHOOK_EVENTS


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


# --------------------------------------------------------------------- users


@main.group()
def user() -> None:
    """Users of the server (admins only)."""


@user.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May see and act on every job, and manage users.")
def user_add(name: str, admin: bool) -> None:
    """Add user NAME and print their first token (shown this once)."""
    made = server_request("POST", "/api/users", json={"name": name, "admin": admin})
    click.echo(f"User {made['user']}{' (admin)' if made['admin'] else ''} added; token id {made['id']}.")
    click.echo("Their token (shown once; give it to them, they set NBJOBS_TOKEN or log in to the dashboard with it):")
    click.echo(made["token"])


@user.command("ls")
@click.option("--json", "as_json", is_flag=True)
def user_ls(as_json: bool) -> None:
    """List users."""
    users = server_request("GET", "/api/users")
    if as_json:
        _echo_json(users)
        return
    for u in users:
        click.echo(f"{u['id']:>4}  {u['name']:<20} {'admin' if u['admin'] else 'user':<6} {u['tokens']} token(s)")


# -------------------------------------------------------------------- tokens


@main.group()
def token() -> None:
    """API tokens: for the CLI (NBJOBS_TOKEN), scripts and the dashboard's login."""


@token.command("create")
@click.option("--user", "user_name", help="For another user (admins only).")
@click.option("--label", help="What it is for, shown by `token ls`.")
def token_create(user_name: str | None, label: str | None) -> None:
    """Create a token and print it (shown this once; only its hash is kept)."""
    made = server_request("POST", "/api/tokens", json={"user": user_name, "label": label})
    click.echo(f"Token {made['id']} for {made['user']} (shown once):", err=True)
    click.echo(made["token"])


@token.command("ls")
@click.option("--all", "everyone", is_flag=True, help="Every user's tokens (admins only).")
@click.option("--json", "as_json", is_flag=True)
def token_ls(everyone: bool, as_json: bool) -> None:
    """List tokens: id, user, label, last use; never the tokens themselves."""
    tokens = server_request("GET", "/api/tokens", params={"everyone": everyone})
    if as_json:
        _echo_json(tokens)
        return
    for t in tokens:
        status = "revoked" if t["revoked"] else f"last used {t['last_used'] or 'never'}"
        click.echo(f"{t['id']:<14} {t['user']:<16} {t['label'] or '':<16} {status}")


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke token TOKEN_ID (from `token ls`); its dashboard sessions end too."""
    server_request("DELETE", f"/api/tokens/{token_id}")
    click.echo(f"Token {token_id} revoked.")


# ------------------------------------------------------------------- secrets


@main.group()
def secret() -> None:
    """Your secrets: a job names them (`secrets: [NAME]`) and its kernel gets them as environment variables."""


@secret.command("set")
@click.argument("name")
def secret_set(name: str) -> None:
    """Set secret NAME; the value is read from standard input, or asked for (hidden) at a terminal."""
    if sys.stdin.isatty():
        value = click.prompt(f"Value of {name}", hide_input=True, confirmation_prompt=True)
    else:
        value = sys.stdin.read().removesuffix("\n")
    if not value:
        raise InvalidInput("No value given for the secret (standard input was empty).")
    answer = server_request("PUT", f"/api/secrets/{name}", json={"value": value})
    click.echo(f"Secret {name} {'set' if answer['created'] else 'replaced'}.")


@secret.command("ls")
@click.option("--json", "as_json", is_flag=True)
def secret_ls(as_json: bool) -> None:
    """List your secrets' names (values are never shown)."""
    names = server_request("GET", "/api/secrets")
    if as_json:
        _echo_json(names)
        return
    for s in names:
        click.echo(f"{s['name']:<32} updated {s['updated']}")


@secret.command("rm")
@click.argument("name")
def secret_rm(name: str) -> None:
    """Remove secret NAME."""
    server_request("DELETE", f"/api/secrets/{name}")
    click.echo(f"Secret {name} removed.")


# ------------------------------------------------------------------ webhooks


@main.group()
def webhook() -> None:
    """Webhooks for all your jobs (a job's own go in its spec: `webhooks: [{url, events}]`)."""


@webhook.command("add")
@click.argument("url")
@click.option("--event", "events", multiple=True, type=click.Choice(WEBHOOK_EVENTS), help="Repeatable.")
def webhook_add(url: str, events: tuple[str, ...]) -> None:
    """POST to URL when your jobs start or end (default: succeeded, failed, timed_out)."""
    body: dict[str, Any] = {"url": url}
    if events:
        body["events"] = list(events)
    made = server_request("POST", "/api/webhooks", json=body)
    click.echo(f"Webhook {made['id']}: {made['url']} on {', '.join(made['events'])}.")


@webhook.command("ls")
@click.option("--json", "as_json", is_flag=True)
def webhook_ls(as_json: bool) -> None:
    hooks = server_request("GET", "/api/webhooks")
    if as_json:
        _echo_json(hooks)
        return
    for h in hooks:
        click.echo(f"{h['id']:>4}  {h['url']}  {', '.join(h['events'])}")


@webhook.command("rm")
@click.argument("webhook_id", type=int)
def webhook_rm(webhook_id: int) -> None:
    server_request("DELETE", f"/api/webhooks/{webhook_id}")
    click.echo(f"Webhook {webhook_id} removed.")


@webhook.command("secret")
def webhook_secret() -> None:
    """Print the key that signs your webhooks (X-Nbjobs-Signature: sha256=HMAC-SHA256(key, body))."""
    click.echo(server_request("GET", "/api/webhooks/secret")["secret"])


@webhook.command("deliveries")
@click.option("--job", "job_id", type=int, help="Only this job's.")
@click.option("--json", "as_json", is_flag=True)
def webhook_deliveries(job_id: int | None, as_json: bool) -> None:
    """The delivery log: each notification, its status, tries and last answer."""
    path = f"/api/jobs/{job_id}/webhooks" if job_id else "/api/webhooks/deliveries"
    rows = server_request("GET", path)
    if as_json:
        _echo_json(rows)
        return
    for d in rows:
        answer = d["response_code"] or d["error"] or ""
        click.echo(f"{d['id']:>5} job {d['job_id']:<6} {d['event']:<10} {d['status']:<9} {d['tries']} tries  {answer}")


# ---------------------------------------------------------------------- demo


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--notebook",
    default="examples/hello.ipynb",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The example notebook to queue.",
)
@click.option(
    "--pipeline",
    default="examples/pipeline/pipeline.yaml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="An example pipeline to run too ('' for none).",
)
def demo(host: str, port: int, notebook: str, pipeline: str) -> None:
    """Start the server with a few example jobs; print the dashboard's URL and a token to log in with."""
    from nbjobs.config import Settings
    from nbjobs.server.auth import local_token
    from nbjobs.server.main import serve

    path = Path(notebook).resolve()
    if not path.is_file():
        raise InvalidInput(f"Example notebook {notebook!r} (--notebook) does not exist; run from the repository root.")
    if pipeline and not Path(pipeline).is_file():
        raise InvalidInput(f"Example pipeline {pipeline!r} (--pipeline) does not exist; run from the repository root.")
    settings = Settings.from_env()

    async def queue_examples(url: str, service: Any, people: Any) -> None:
        owner = people.admin.name
        examples = [
            {"greeting": "hello", "n": 10},
            {"greeting": "bonjour", "n": 1000, "scale": 0.5},
            {"greeting": "hallo", "n": 100000},
        ]
        for i, params in enumerate(examples, 1):
            spec = {"notebook": str(path), "name": f"demo-{i}", "parameters": params, "tags": ["demo"]}
            await asyncio.to_thread(service.submit, spec, owner)
        if pipeline:
            from nbjobs.pipelines.model import load_pipeline_file
            from nbjobs.pipelines.runs import PipelineService

            run = await asyncio.to_thread(
                PipelineService(service).start, load_pipeline_file(pipeline), {}, owner, str(pipeline)
            )
            click.echo(f"Started pipeline run {run['id']} ({run['name']}): {url}/ui/pipelines")
        click.echo(f"\nDashboard: {url}/ui")
        click.echo(f"Log in with this token: {local_token(settings.home)}")
        click.echo("Queued 3 example jobs. Stop with Ctrl-C.\n", nl=True)

    asyncio.run(serve(settings, host, port, on_ready=queue_examples))
