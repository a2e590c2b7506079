"""Outside values of a request, checked once: integers through identify.integers (ids
within the id columns' range, the rest within 64 bits), subject names through
identify.subject_names. A bad value is a 400 that names the field, never an exception deeper
down; an id in a URL path that no row can have is a 404, like any other missing one."""

from __future__ import annotations

from typing import Any

from werkzeug.routing import IntegerConverter

from identify.integers import DB_MAX, DB_MIN, ID_MAX, IntegerError, parse_int
from identify.settings import min_quality
from identify.subject_names import SubjectNameError, subject_name
from identify.web.http_errors import ApiError


def int_param(
    value: Any,
    field: str,
    *,
    default: int | None = None,
    minimum: int = DB_MIN,
    maximum: int = DB_MAX,
) -> int:
    """``value`` as an int in range; ``default`` when it is absent or empty (400 without one)."""
    if value in (None, "") and default is not None:
        return default
    try:
        return parse_int(value, field, minimum=minimum, maximum=maximum)
    except IntegerError as error:
        raise ApiError(400, "bad_parameter", str(error), {"field": field}) from None


def id_param(value: Any, field: str) -> int:
    """A row id from a query, form or body: 400 naming the field when no row can have it."""
    return int_param(value, field, minimum=1, maximum=ID_MAX)


def page_param(value: Any, per_page: int) -> int:
    """A page number (from 1), bounded so that its first row's offset stays a 64-bit integer."""
    return int_param(value, "page", default=1, minimum=1, maximum=DB_MAX // per_page)


def quality_param(value: Any, field: str = "min_quality") -> float | None:
    """A minimum face quality from 0 to 1 (a number, or its text in a form); None when absent
    or empty (the setting's applies), a 400 naming the field otherwise."""
    if value in (None, ""):
        return None
    try:
        number = float(value.strip()) if isinstance(value, str) else value
        return min_quality(number, field)
    except ValueError:
        raise ApiError(
            400,
            "bad_parameter",
            f"{field}={value!r} must be a number from 0 to 1",
            {"field": field},
        ) from None


def name_param(value: Any, field: str = "name") -> str:
    """A subject name that keeps the policy (400 bad_name saying which character, where)."""
    if not isinstance(value, str):
        raise ApiError(400, "bad_name", f"{field} is a non-empty string", {"field": field})
    try:
        return subject_name(value)
    except SubjectNameError as error:
        raise ApiError(400, "bad_name", str(error), {"field": field}) from None


class IdConverter(IntegerConverter):
    """`<int:...>` in every route: ASCII digits only (Python's int() also reads other scripts'
    digits), at most 40 of them; :func:`check_path_ids` then checks the range, naming the
    field (a converter cannot: werkzeug would answer 405 for a route of another method)."""

    regex = r"[0-9]{1,40}"

    def to_python(self, value: str) -> int:
        return int(value)


def check_path_ids(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """A url_value_preprocessor: an id in the path that no row can have is a 404 naming it."""
    for field, value in (values or {}).items():
        if isinstance(value, int):
            try:
                parse_int(value, field, minimum=0, maximum=ID_MAX)
            except IntegerError as error:
                raise ApiError(
                    404, "not_found", f"no such {field}: {error}", {"field": field}
                ) from None
