"""The `cqaface` command: one entry point whose subcommands come from each package."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, NoReturn

from embedder import cli as embedder_cli
from identify.cli import core, hygiene, web
from identify.settings import Settings
from trainer import cli as trainer_cli
from workers import cli as workers_cli

if TYPE_CHECKING:
    from sqlalchemy.exc import DBAPIError


class _Parser(argparse.ArgumentParser):
    """A usage error is one line and exit status 2, like every other refusal of the command
    (its subcommands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cqaface", description="CQA-Face Identify: face embedding and identification."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    embedder_cli.register(commands)
    trainer_cli.register(commands)
    trainer_cli.register_eval(commands)
    hygiene.register(core.register(commands))
    web.register(commands)
    workers_cli.register(commands)
    trainer_cli.register_mask(commands)
    trainer_cli.register_ablate(commands)
    return parser


# A bad argument or setting: an unsupported URL, a file SQLite cannot use, a missing model file.
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3  # the database or the broker refused or dropped the connection


def main(argv: list[str] | None = None) -> int:
    """Run a command; a bad setting or an unreachable service is one line on stderr and a
    documented exit status (README, Command line), never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        args.settings = Settings.from_env()  # read once; a bad value fails here, in one line
        return args.handler(args)
    except _usage_errors() as error:
        return _fail(args, _message(error), EXIT_USAGE)
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        line = _unreachable(error, args.settings)
        if line is not None:
            return _fail(args, line, EXIT_UNREACHABLE)
        line = _unusable(error, args.settings)
        if line is None:
            raise  # a bug: its traceback is what a report needs
        return _fail(args, line, EXIT_USAGE)


def _usage_errors() -> tuple[type[Exception], ...]:
    """Bad arguments and settings. CheckpointError only where a command loaded the checkpoint
    module: importing it means importing torch, seconds that `db` or `job` have no use for."""
    checkpoint = sys.modules.get("embedder.checkpoint")
    model_errors = (checkpoint.CheckpointError,) if checkpoint is not None else ()
    return (*model_errors, NotADirectoryError, LookupError, ValueError)


def _fail(args: argparse.Namespace, message: str, status: int) -> int:
    print(f"cqaface {args.command}: error: {message}", file=sys.stderr)
    return status


def _message(error: Exception) -> str:
    """The error's own message on one line. A library's explanation that it wraps (torch's
    several paragraphs on a file that is not a checkpoint) is left out, unless it is the
    operating system's short one (permission denied)."""
    text, cause = str(error), error.__cause__
    if cause is not None and not isinstance(cause, OSError) and text.endswith(str(cause)):
        text = text[: len(text) - len(str(cause))].rstrip(": ")
    return " ".join(text.split())


def _unreachable(error: Exception, settings: Settings) -> str | None:
    """The line for a database or broker that cannot be reached (the outages that the HTTP
    API answers with 503: identify.gallery.db.is_outage), else None."""
    from sqlalchemy.exc import DBAPIError

    from identify.gallery.db import is_outage

    if isinstance(error, DBAPIError):
        return _database_line(error, settings) if is_outage(error) else None
    broker_error = _broker_error(error)
    return None if broker_error is None else _broker_line(broker_error, settings)


def _unusable(error: Exception, settings: Settings) -> str | None:
    """The line for a SQLite file that CQAFACE_DATABASE_URL names but SQLite cannot use."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from identify.gallery.db import unusable_sqlite

    cause = unusable_sqlite(error) if isinstance(error, DBAPIError) else None
    if cause is None:
        return None
    path = make_url(settings.database_url).database
    return f"cannot use the database {path} (CQAFACE_DATABASE_URL): {cause}"


def _database_line(error: DBAPIError, settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    cause = _driver_cause(str(error.orig))
    if url.get_backend_name() == "sqlite":
        return f"cannot use the database {url.database} (CQAFACE_DATABASE_URL): {cause}"
    host = url.host or url.query.get("host") or "localhost"
    return (
        f"cannot connect to the database at {host}:{url.port or 5432} "
        f"(CQAFACE_DATABASE_URL): {cause}"
    )


def _driver_cause(text: str) -> str:
    """psycopg's 'connection failed: connection to server at "h", port p failed: CAUSE' and
    its hints on further lines, down to CAUSE."""
    first = text.strip().splitlines()[0] if text.strip() else "connection failed"
    cause = first.rsplit(" failed: ", 1)[-1].removeprefix("FATAL: ").strip()
    return " ".join(cause.split())


def _broker_error(error: BaseException) -> BaseException | None:
    """The broker's connection error in ``error``'s chain (Celery wraps redis-py's)."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError, TimeoutError

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OperationalError | ConnectionError | TimeoutError):
            return seen
        seen = seen.__cause__
    return None


def _broker_line(error: BaseException, settings: Settings) -> str:
    """redis-py says 'Error 111 connecting to HOST:PORT. Connection refused.': the address it
    names (the broker's, or a separate result backend's), else the configured broker's."""
    import re

    from sqlalchemy.engine import make_url

    text = " ".join(str(error).split())
    named = re.match(r"Error -?\d+ connecting to (\S+?)\. (.*)", text)
    if named:
        address, cause = named.group(1), named.group(2)
    else:
        url = make_url(settings.broker_url or "redis://localhost")
        address, cause = f"{url.host or 'localhost'}:{url.port or 6379}", text
    return f"cannot connect to the broker at {address} (CQAFACE_BROKER_URL): {cause.rstrip('.')}"
