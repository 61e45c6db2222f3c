"""The review web UI (`review`) and its accounts (`users add`, `users list`, `users password`, `users disable`)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table

from worker.cli.common import cli_actor, console, out, ready_settings

app = typer.Typer(no_args_is_help=True)  # review: merged into the top level
users_app = typer.Typer(help="Accounts of the review UI.", no_args_is_help=True)

ROLE_HELP = "viewer (read, no patient identifiers), reviewer (also reviews), admin"
MIN_PASSWORD = 8


@app.command()
def review(
    host: Annotated[str, typer.Option(help="address to listen on; 0.0.0.0 for every interface")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
) -> None:
    """Serve the review web UI and its JSON API (/api/, described at /docs and /openapi.json)."""
    import uvicorn

    from worker import metrics
    from worker.logs import uvicorn_log_config
    from worker.review.app import create_app

    settings = ready_settings()
    metrics.configure(settings)
    if not settings.review_https_only and host not in ("127.0.0.1", "localhost", "::1"):
        console.print("[yellow]serving beyond this machine without ECG_INTAKE_REVIEW_HTTPS_ONLY=true: put it "
                      "behind an https proxy and set that, so the session cookie is never sent in clear")
    console.print(f"review UI on http://{host}:{port}/ (users: `ecg-intake users add NAME --role reviewer`)")
    proxies = settings.review_trusted_proxies.strip()  # default: X-Forwarded-For from anyone is ignored
    # No access log: the worklist's and the API's query strings can carry a patient id (?patient=).
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False,
                log_config=uvicorn_log_config(settings.log_format), server_header=False,
                proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None)


def _read_password(password_stdin: bool) -> str:
    """A new password from the first line of standard input or a hidden prompt, refused if too short."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        console.print(f"[red]the password needs at least {MIN_PASSWORD} characters")
        raise typer.Exit(2)
    return password


@users_app.command("add")
def users_add(
    name: str,
    role: Annotated[str, typer.Option(help=ROLE_HELP)] = "reviewer",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from the first "
                                                                         "line of standard input")] = False,
) -> None:
    """Add an account; the password is asked with a hidden prompt (or read with --password-stdin)."""
    from worker.db import queries
    from worker.db.session import session_scope
    from worker.review.auth import ROLES, hash_password

    if role not in ROLES:
        console.print(f"[red]role must be one of {', '.join(ROLES)}, not {role!r}")
        raise typer.Exit(2)
    if not re.fullmatch(r"[A-Za-z0-9._@-]{1,128}", name):
        console.print("[red]a user name is 1-128 letters, digits or . _ @ -")
        raise typer.Exit(2)
    password = _read_password(password_stdin)
    settings = ready_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        if queries.user_named(session, name) is not None:
            console.print(f"[red]user {name!r} exists already")
            raise typer.Exit(1)
        user = queries.add_user(session, name=name, password_hash=hash_password(password), role=role)
        queries.record_event(session, actor=cli_actor(), action="user_added", details={"user": name, "role": role,
                                                                                        "user_id": user.id})
    console.print(f"added {name} ({role})")


@users_app.command("list")
def users_list(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Every account with its role and whether it is disabled."""
    from worker.db import queries
    from worker.db.session import session_scope

    settings = ready_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        rows = [{"name": u.name, "role": u.role, "disabled": bool(u.disabled), "created_at": u.created_at.isoformat()}
                for u in queries.all_users(session)]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("name", "role", "disabled", "created")
    for row in rows:
        table.add_row(row["name"], row["role"], "yes" if row["disabled"] else "", row["created_at"][:19])
    out.print(table)


@users_app.command("password")
def users_password(
    name: str,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from the first "
                                                                         "line of standard input")] = False,
) -> None:
    """Set an account's password; every open session of the account ends."""
    from worker.review.auth import hash_password

    password_hash = hash_password(_read_password(password_stdin))
    ended = _change_user(name, "user_password_set", lambda user: setattr(user, "password_hash", password_hash))
    console.print(f"password of {name} set; {ended} open session(s) ended")


@users_app.command("disable")
def users_disable(name: str) -> None:
    """Disable an account: it can no longer log in, and its open sessions end at once."""
    _change_user(name, "user_disabled", lambda user: setattr(user, "disabled", True))
    console.print(f"disabled {name}")


def _change_user(name: str, action: str, change: Callable[[Any], None]) -> int:
    """Apply `change` to the named account, end its open sessions and record `action`; returns how many
    sessions ended. An unknown name exits 1."""
    from worker.db import queries
    from worker.db.session import session_scope
    from worker.review.sessions import end_user_sessions

    settings = ready_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        user = queries.user_named(session, name)
        if user is None:
            console.print(f"[red]no user {name!r}")
            raise typer.Exit(1)
        change(user)
        ended = end_user_sessions(session, user.id)
        queries.record_event(session, actor=cli_actor(), action=action,
                             details={"user": name, "user_id": user.id, "sessions_ended": ended})
    return ended
