"""Property tests (hypothesis) for the parsers of outside text: archive member names, CSV and
JSON-lines enrolment lists, LFW and CSV pairs files, settings from the environment, subject
names and integers. Whatever the text, each parser answers with its result or its own error
(one that says what is wrong), never another exception, and never writes outside its folder.

Deterministic: derandomised, a bounded number of examples, no example database."""

from __future__ import annotations

import io
import json
import math
import os
import unicodedata
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedder import settings as embedder_settings
from identify.gallery.jobs import upload_file
from identify.gallery.sources import SourceError, list_items, zip_items
from identify.integers import DB_MAX, DB_MIN, IntegerError, parse_int
from identify.settings import Settings
from identify.subject_names import MAX_LENGTH, SubjectNameError, printable, subject_name
from trainer.pairs import PairsFormatError, read_csv_pairs, read_lfw_pairs

PROPERTY = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Text as it arrives from files and forms: any code point but lone surrogates.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
PATH_PART = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="/\\\x00"), min_size=1, max_size=40
) | st.sampled_from(["..", ".", "A" * 5000, "Bob\u202eevil", "__MACOSX"])
PHOTO = st.sampled_from([".jpg", ".png", ".JPG", ".txt", ""])


@contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


# ----- archive member names -----------------------------------------------------------------


@PROPERTY
@given(
    members=st.lists(
        st.tuples(st.lists(PATH_PART, min_size=1, max_size=3), PHOTO), min_size=1, max_size=6
    )
)
def test_any_member_names_are_extracted_under_generated_names_or_refused(tmp_path, members):
    names = ["/".join(parts) + suffix for parts, suffix in members]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": a hostile archive may repeat one
        for k, name in enumerate(names):
            bundle.writestr(name, f"photo {k}")
    buffer.seek(0)
    destination = tmp_path / f"up-{abs(hash(tuple(names)))}"
    try:
        items = zip_items(buffer, destination)
    except SourceError as error:
        assert error.code in ("zip_slip", "empty_source") and error.message
        assert not destination.exists() or not any(destination.iterdir())
        return
    stored = sorted(p.name for p in destination.iterdir())
    assert stored == sorted({upload_file(destination, member).name for _, member in items})
    for subject, member in items:
        assert member in names and PurePosixPath(member).parts[-2] == subject
        assert len(upload_file(destination, member).name) <= 37  # 32 hex digits and a suffix


# ----- enrolment lists ----------------------------------------------------------------------


@PROPERTY
@given(text=TEXT, rows=st.lists(st.tuples(TEXT, TEXT), max_size=5), jsonl=st.booleans())
def test_any_list_gives_items_or_a_bad_list_error(tmp_path, text, rows, jsonl):
    listing = tmp_path / ("list.jsonl" if jsonl else "list.csv")
    if jsonl:
        body = "\n".join(json.dumps({"subject": s, "path": p}) for s, p in rows) + "\n" + text
    else:
        body = "\n".join(f"{s},{p}" for s, p in rows) + "\n" + text
    listing.write_text(body, encoding="utf-8")
    try:
        items = list_items(listing, restricted=False)
    except SourceError as error:
        assert error.code in ("bad_list", "empty_source") and error.message
        return
    assert items and all(isinstance(s, str) and isinstance(p, Path) for s, p in items)


@PROPERTY
@given(data=st.binary(max_size=200))
def test_any_bytes_as_a_list_give_items_or_a_bad_list_error(tmp_path, data):
    listing = tmp_path / "list.csv"
    listing.write_bytes(data)
    try:
        list_items(listing, restricted=False)
    except SourceError as error:
        assert error.code in ("bad_list", "empty_source")


# ----- pairs files --------------------------------------------------------------------------

NAME = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8)
INDEX = st.integers(-2, 12).map(str) | st.sampled_from(["x", "²", "١", "+3", "1_0", ""])


@PROPERTY
@given(
    header=st.sampled_from(["1\t1", "2 1", "1", "", "x y", "²", "1 ²", "0 0"]) | TEXT,
    lines=st.lists(st.lists(NAME | INDEX, min_size=0, max_size=5).map("\t".join), max_size=5),
)
def test_any_lfw_pairs_file_gives_pairs_or_a_format_error_naming_the_file(tmp_path, header, lines):
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    try:
        pairs = read_lfw_pairs(path, lambda name, i: tmp_path / name / f"{i}.jpg")
    except PairsFormatError as error:
        assert str(error).startswith(str(path))
        return
    assert all(p.path1.name.endswith(".jpg") for p in pairs)


@PROPERTY
@given(
    header=st.sampled_from(["path1,path2,same", "path1,path2,same,fold", "a,b"]),
    rows=st.lists(st.lists(TEXT | INDEX, max_size=5), max_size=5),
)
def test_any_csv_pairs_file_gives_pairs_or_a_format_error_naming_the_file(tmp_path, header, rows):
    path = tmp_path / "pairs.csv"
    body = "\n".join([header, *(",".join(row) for row in rows)]) + "\n"
    path.write_text(body, encoding="utf-8")
    try:
        pairs = read_csv_pairs(path)
    except PairsFormatError as error:
        assert str(error).startswith(str(path))
        return
    assert all(isinstance(p.same, bool) and p.fold >= 0 for p in pairs)


# ----- settings -----------------------------------------------------------------------------

ENV_TEXT = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30
) | st.sampled_from(["nan", "inf", "-inf", "1e400", "1_000", "١٢", " 7 ", "-3", "0x10"])


def _setting(attribute: str):
    """Reads one identify setting from a settings object built of that variable alone."""
    return lambda name, value: getattr(Settings.from_env({name: value}), attribute)


def _embedder(read):
    """Reads one embedder setting, which the embedder reads from the environment."""

    def get(name, value):
        with _env(name, value):
            return read()

    return get


NUMBERS = {
    "CQAFACE_ZIP_MAX_RATIO": _setting("zip_max_ratio"),
    "CQAFACE_ZIP_MAX_MEMBERS": _setting("zip_max_members"),
    "CQAFACE_MAX_PHOTO_BYTES": _setting("max_photo_bytes"),
    "CQAFACE_PASSWORD_LINK_HOURS": _setting("password_link_hours"),
}
CHOICES = {
    "CQAFACE_KEEP": _setting("keep"),
    "CQAFACE_INDEX_APPROX": _setting("index_approximate"),
    "CQAFACE_RUNTIME": _embedder(embedder_settings.runtime),
}


@PROPERTY
@given(value=ENV_TEXT, name=st.sampled_from(sorted(NUMBERS)))
def test_a_numeric_setting_is_a_finite_number_or_an_error_naming_the_variable(value, name):
    try:
        number = NUMBERS[name](name, value)
    except ValueError as error:
        assert str(error).startswith(name)
        return
    assert math.isfinite(number)
    if value.strip():
        assert number == (float(value) if isinstance(number, float) else int(value))


@PROPERTY
@given(value=ENV_TEXT, name=st.sampled_from(sorted(CHOICES)))
def test_a_choice_setting_is_one_of_its_choices_or_an_error_naming_the_variable(value, name):
    try:
        chosen = CHOICES[name](name, value)
    except ValueError as error:
        assert str(error).startswith(name)
        return
    assert chosen == (value or chosen)


@PROPERTY
@given(value=ENV_TEXT)
def test_threads_is_a_positive_count_or_an_error_naming_the_variable(value):
    with _env("CQAFACE_THREADS", value):
        try:
            threads = embedder_settings.threads()
        except ValueError as error:
            assert str(error).startswith("CQAFACE_THREADS")
            return
    assert threads is None if not value else threads >= 1


@PROPERTY
@given(
    value=ENV_TEXT
    | st.sampled_from(
        [
            "sqlite:///x.db",
            "postgresql://u:secret@h:99999/db",
            "mysql://u:secret@h/db",
            "postgresql+psycopg2://h/db",
        ]
    )
)
def test_a_database_url_is_supported_or_refused_without_its_password(value):
    try:
        url = Settings.from_env({"CQAFACE_DATABASE_URL": value}).database_url
    except ValueError as error:
        assert str(error).startswith("CQAFACE_DATABASE_URL") and "secret" not in str(error)
        return
    assert url.split("://")[0] in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg") or not value


# ----- subject names and integers -----------------------------------------------------------


@PROPERTY
@given(raw=st.text(max_size=300) | st.sampled_from(["Bob\u202eevil", "a\u2066b", "e\u0301"]))
def test_a_subject_name_is_nfc_and_printable_or_refused_naming_a_character(raw):
    try:
        name = subject_name(raw)
    except SubjectNameError as error:
        message = str(error)
        assert "U+" in message or "characters" in message or "empty" in message
        return
    assert name == unicodedata.normalize("NFC", name) and 0 < len(name) <= MAX_LENGTH
    assert printable(name) == name  # nothing in it needs escaping


@PROPERTY
@given(
    value=st.integers()
    | st.text(max_size=30)
    | st.integers().map(str)
    | st.floats()
    | st.booleans()
    | st.none()
)
def test_an_outside_integer_is_in_the_64_bit_range_or_refused_naming_the_field(value):
    try:
        number = parse_int(value, "page")
    except IntegerError as error:
        assert error.field == "page" and str(error).startswith("page ")
        return
    assert DB_MIN <= number <= DB_MAX and not isinstance(value, bool | float)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("12", 12), (" 12 ", 12), ("-3", -3), ("+4", 4), (str(DB_MAX), DB_MAX), ("007", 7)],
)
def test_decimal_text_within_the_range_is_read(value, expected):
    assert parse_int(value, "x") == expected


@pytest.mark.parametrize(
    "value",
    [str(DB_MAX + 1), str(DB_MIN - 1), "١٢", "1_000", "1.0", "", " ", "0x1", True, 1.0, None, [1]],
)
def test_anything_else_is_refused(value):
    with pytest.raises(IntegerError):
        parse_int(value, "x")


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("\u0645\u062d\u0645\u062f\u200c\u0631\u0636\u0627", True),  # Persian, with a ZWNJ
        ("\u0915\u094d\u200d\u0937", True),  # Devanagari, a ZWJ choosing the half form
        ("Bob\u200bSmith", False),  # a zero-width space hides a second name
        ("Bob\u00adSmith", False),  # a soft hyphen, invisible
    ],
)
def test_joiners_that_spell_real_names_are_kept_and_invisible_spacers_refused(raw, kept):
    if kept:
        assert subject_name(raw) == raw
    else:
        with pytest.raises(SubjectNameError, match="U\\+"):
            subject_name(raw)
