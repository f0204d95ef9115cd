"""The `connector` command: init, create-user, create-token, list-tokens, revoke-token, serve, worker, sync."""
from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from .config import ConfigError
from .runtime import Runtime, configure_logging

log = logging.getLogger("connector")


def _runtime(ctx: click.Context) -> Runtime:
    try:
        return Runtime.create(config_path=ctx.obj.get("config"))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _prepare(rt: Runtime) -> None:
    rt.db.migrate()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", envvar="CONNECTOR_CONFIG", default=None,
              help="TOML configuration file (default ./config.toml; CONNECTOR_CONFIG).")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """Connect Microsoft 365 mailboxes to a helpdesk."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    configure_logging()


@main.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create or migrate the database; print where it is."""
    rt = _runtime(ctx)
    _prepare(rt)
    click.echo(f"database ready: {rt.db.location()}")


@main.command("create-user")
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "agent"]), default="agent", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of standard input.")
@click.pass_context
def create_user(ctx: click.Context, email: str, role: str, password_stdin: bool) -> None:
    """Add a person who signs in at /login."""
    from . import users

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    rt = _runtime(ctx)
    _prepare(rt)
    try:
        with rt.db.session() as session:
            user = users.create_user(session, email, password, role)
            click.echo(f"created {role} {user.email}", err=True)
    except users.UserError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("create-token")
@click.argument("email")
@click.option("--name", default="", help="What the token is for, shown in listings (e.g. 'reporting script').")
@click.option("--expires-days", type=click.IntRange(1, 3650), default=None,
              help="Stop working after this many days (default: never).")
@click.pass_context
def create_token(ctx: click.Context, email: str, name: str, expires_days: int | None) -> None:
    """Print a new REST API token for that user (only the token, on stdout)."""
    from . import api_tokens, users

    rt = _runtime(ctx)
    _prepare(rt)
    with rt.db.session() as session:
        user = users.find_user(session, email)
        if user is None:
            raise click.ClickException(f"no user {email}: create it with 'connector create-user {email}'")
        try:
            token, row = api_tokens.create(session, user, name, expires_days)
        except api_tokens.TokenError as exc:
            raise click.ClickException(str(exc)) from None
        token_id = row.id
    click.echo(f"created API token {token_id} for {user.email}"
               f"{f', expires {row.expires_at:%Y-%m-%d %H:%M} UTC' if row.expires_at else ''}", err=True)
    click.echo(token)


def _when(value) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "-"


@main.command("list-tokens")
@click.argument("email")
@click.pass_context
def list_tokens(ctx: click.Context, email: str) -> None:
    """List a user's API tokens (never the tokens themselves): ID, state, dates in UTC, name."""
    from . import api_tokens, users

    rt = _runtime(ctx)
    _prepare(rt)
    with rt.db.session() as session:
        user = users.find_user(session, email)
        if user is None:
            raise click.ClickException(f"no user {email}")
        rows = api_tokens.tokens_of(session, user)
        if not rows:
            click.echo(f"{user.email} has no API tokens", err=True)
            return
        header = ("ID", "STATE", "CREATED", "EXPIRES", "LAST USED", "NAME")
        lines = [(str(t.id), api_tokens.state(t), _when(t.created_at), _when(t.expires_at) if t.expires_at else "never",
                  _when(t.last_used_at) if t.last_used_at else "never", t.name or "-") for t in rows]
        widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header) - 1)]
        for line in [header, *lines]:
            click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1])


@main.command("revoke-token")
@click.argument("token_id", metavar="ID", type=int)
@click.pass_context
def revoke_token(ctx: click.Context, token_id: int) -> None:
    """Revoke an API token by its ID (from list-tokens); it stops working at once."""
    from . import api_tokens

    rt = _runtime(ctx)
    _prepare(rt)
    with rt.db.session() as session:
        row = api_tokens.get(session, token_id)
        if row is None:
            raise click.ClickException(f"no API token with ID {token_id}; 'connector list-tokens EMAIL' lists them")
        label = f"API token {row.id}{f' ({row.name})' if row.name else ''} of {row.user.email}"
        if api_tokens.revoke(row):
            click.echo(f"revoked {label}")
        else:
            click.echo(f"{label} was revoked already, on {row.revoked_at:%Y-%m-%d %H:%M} UTC")


def _first_admin(rt: Runtime) -> None:
    from . import users

    with rt.db.session() as session:
        created = users.ensure_first_admin(session)
    if created:
        email, password = created
        click.echo("\n  First run: created the admin account\n"
                   f"    email:    {email}\n    password: {password}\n"
                   "  (shown only now; sign in at /login and change it by clicking your address, top right)\n", err=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--no-worker", is_flag=True, help="Serve the web app only; run 'connector worker' elsewhere.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, no_worker: bool) -> None:
    """Run the web app, plus the worker in the same process (the embedded default)."""
    from werkzeug.serving import make_server

    from .web.app import build_app

    rt = _runtime(ctx)
    _prepare(rt)
    _first_admin(rt)
    try:
        app = build_app(runtime=rt)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    worker = None
    if not no_worker:
        from .worker import Worker

        worker = Worker(rt, name=f"serve-{port}")
        worker.start_background()
    server = make_server(host, port, app, threaded=True)
    click.echo(f"connector on http://{host}:{port} (database {rt.db.location()}"
               f"{', worker in-process' if worker else ', no worker'})", err=True)

    def _stop(signum, _frame) -> None:
        log.info("stopping (signal %s)", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        server.serve_forever()
    finally:
        if worker is not None:
            worker.stop(wait=True)


@main.command()
@click.option("--burst", is_flag=True, help="Sync every due mailbox and send due replies once, then exit.")
@click.pass_context
def worker(ctx: click.Context, burst: bool) -> None:
    """A standalone worker: reads mailboxes and sends replies (no web)."""
    from .worker import Worker

    rt = _runtime(ctx)
    _prepare(rt)
    w = Worker(rt)
    if burst:
        sys.exit(0 if w.run_burst() else 1)
    w.install_signal_handlers()
    w.run()


@main.command()
@click.option("--account", "address", default=None, help="Only this mailbox address.")
@click.option("--once", is_flag=True, required=True, help="One pass, then exit (required).")
@click.pass_context
def sync(ctx: click.Context, address: str | None, once: bool) -> None:
    """One sync pass; exits non-zero if any mailbox failed."""
    from .worker import Worker

    rt = _runtime(ctx)
    _prepare(rt)
    ok, lines = Worker(rt).sync_once(address)
    for line in lines:
        click.echo(line)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
