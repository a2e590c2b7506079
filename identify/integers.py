"""Integers from outside (URL paths, query strings, forms, JSON, command-line arguments),
parsed in one place. Python's integers are unbounded and the database's are not: a value past
SQLite's 64 bits is an OverflowError, and past a PostgreSQL `integer` column (the tables' ids,
32 bits) an out-of-range error. Such a value is refused here, with the field named, before any
query is built."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

DB_MIN = -(2**63)  # a 64-bit integer: SQLite's, PostgreSQL's bigint (OFFSET, LIMIT)
DB_MAX = 2**63 - 1
ID_MAX = 2**31 - 1  # the tables' Integer id columns (PostgreSQL's integer)
_DECIMAL = re.compile(r"[+-]?0*[0-9]{1,19}")  # ASCII only: int() also takes "١٢" and "1_000"


class IntegerError(ValueError):
    """An outside value that is not an integer in range; names the field it came from."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_int(value: object, field: str, *, minimum: int = DB_MIN, maximum: int = DB_MAX) -> int:
    """``value`` (a JSON integer, or decimal digits as text) as an int within
    ``[minimum, maximum]``, which never leave the database's signed 64-bit range."""
    minimum, maximum = max(minimum, DB_MIN), min(maximum, DB_MAX)
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        number = int(value.strip())
    elif isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        raise IntegerError(field, f"{field} must lie between {minimum} and {maximum}")
    else:
        raise IntegerError(field, f"{field} must be an integer, not {_shown(value)}")
    if not minimum <= number <= maximum:
        raise IntegerError(field, f"{field} must lie between {minimum} and {maximum}")
    return number


def argument(field: str, *, minimum: int = DB_MIN, maximum: int = DB_MAX) -> Callable[[str], int]:
    """An argparse ``type=`` that parses with :func:`parse_int` (argparse then reports the
    error as a usage error: one line and exit status 2)."""

    def parse(text: str) -> int:
        try:
            return parse_int(text, field, minimum=minimum, maximum=maximum)
        except IntegerError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = field  # argparse names the type in "invalid <name> value"
    return parse


def id_argument(field: str) -> Callable[[str], int]:
    """An argparse ``type=`` for a row id: 1 to what an id column can hold."""
    return argument(field, minimum=1, maximum=ID_MAX)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."
