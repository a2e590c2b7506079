"""`cqaface serve`, `cqaface admin create-user` and `cqaface apikey create|revoke|list`: the web
server and the first accounts (there are no default users, passwords or keys anywhere)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from identify.integers import argument


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("serve", help="run the web UI and JSON API (gunicorn)")
    p.add_argument("--host", help="listen address (default: CQAFACE_HOST or 127.0.0.1)")
    p.add_argument(
        "--port",
        type=argument("--port", minimum=1, maximum=65535),
        help="port (default: CQAFACE_PORT or 8000)",
    )
    p.add_argument(
        "--threads",
        type=argument("--threads", minimum=1),
        default=8,
        help="request threads (one process)",
    )
    p.add_argument("--no-preload", action="store_true", help="load the model on first use")
    p.set_defaults(handler=serve)

    admin = commands.add_parser("admin", help="web users")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    p = admin_commands.add_parser("create-user", help="create a user (password from a prompt)")
    p.add_argument("--email", required=True)
    p.add_argument("--role", required=True, choices=("admin", "operator", "analyst"))
    p.add_argument("--name", default="")
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    p.set_defaults(handler=create_user)

    keys = commands.add_parser("apikey", help="API keys")
    key_commands = keys.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    p = key_commands.add_parser("create", help="create a key and print it (shown only once)")
    p.add_argument("--name", required=True)
    p.add_argument("--scopes", required=True, help="comma-separated: identify,enrol,admin")
    p.add_argument(
        "--user",
        help="e-mail of the key's owner (default: a service user named after the key, whose "
        "role is the least one allowing the scopes)",
    )
    p.set_defaults(handler=create_apikey)
    p = key_commands.add_parser("revoke", help="revoke a key by its prefix")
    p.add_argument("prefix")
    p.set_defaults(handler=revoke_apikey)
    p = key_commands.add_parser(
        "list", help="keys (prefix, name, owner, scopes, use; never the key)"
    )
    p.set_defaults(handler=list_apikeys)


def _sessions(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from identify.gallery.db import make_engine, session_factory

    return session_factory(make_engine(args.settings.database_url))


@contextmanager
def _refused_as_usage() -> Iterator[None]:
    """The web app's refusals (a scope beyond the role, no such key) as bad arguments."""
    from identify.web.http_errors import ApiError

    try:
        yield
    except ApiError as error:
        raise ValueError(error.message) from None


def create_user(args: argparse.Namespace) -> int:
    from identify.web import auth
    from identify.web.audit_log import audit

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("cqaface admin create-user: the passwords differ", file=sys.stderr)
            return 2
    with _sessions(args)() as session, session.begin():
        user = auth.create_user(session, args.email, args.role, password, args.name)
        audit(
            session,
            None,
            "create_user",
            "user",
            user.id,
            email=user.email,
            role=args.role,
            via="cli",
        )
        print(json.dumps({"id": user.id, "email": user.email, "role": user.role.value}))
    return 0


def create_apikey(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from identify.gallery.tables import Role, User
    from identify.web import accounts, auth
    from identify.web.audit_log import audit

    scopes = auth.parse_scopes(args.scopes)
    with _sessions(args)() as session, session.begin(), _refused_as_usage():
        if args.user:
            user = session.scalars(select(User).where(User.email == args.user.lower())).first()
            if user is None:
                raise LookupError(f"no user {args.user}")
        else:
            role = next(
                r
                for r in (Role.ANALYST, Role.OPERATOR, Role.ADMIN)
                if scopes <= auth.ROLE_SCOPES[r]
            )
            email = f"apikey-{args.name}@service.local".lower().replace(" ", "-")
            user = session.scalars(select(User).where(User.email == email)).first()
            if user is None:
                user = auth.create_user(session, email, role, None, name=args.name)
                audit(session, None, "create_user", "user", user.id, email=email, role=role.value)
            elif not scopes <= auth.ROLE_SCOPES[Role(user.role)]:
                old, user.role = Role(user.role), role
                audit(session, None, "set_role", "user", user.id, old=old.value, new=role.value)
        key = accounts.create_key(session, None, user.id, args.name, scopes)
    print(key)
    return 0


def revoke_apikey(args: argparse.Namespace) -> int:
    from identify.web import accounts

    with _sessions(args)() as session, session.begin(), _refused_as_usage():
        accounts.revoke_key(session, None, args.prefix)
    return 0


def list_apikeys(args: argparse.Namespace) -> int:
    from identify.web import accounts

    with _sessions(args)() as session:
        for key in accounts.list_keys(session, None):
            key.pop("user_id")
            print(json.dumps(key))
    return 0


def serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    settings = args.settings
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    preload = not args.no_preload

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", 1)  # one process: one model in memory, one index
            self.cfg.set("threads", max(1, args.threads))
            self.cfg.set("timeout", 300)
            self.cfg.set("accesslog", "-")

        def load(self):  # type: ignore[no-untyped-def]
            from identify.app import create_app
            from identify.services import services

            app = create_app(settings=settings)
            if preload:
                with app.app_context():
                    services().searcher.index.open()  # load the model, open the indexes
            return app

    Server().run()
    return 0
