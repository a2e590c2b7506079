"""Every bad setting, as a new user meets it on the command line: one line on stderr naming the
setting and what to do, a documented exit status (2: a bad setting, 3: a service that cannot
be reached), never a traceback and never a password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from server_process import free_port

from embedder.settings import DEFAULT_MODEL
from identify import settings
from identify.gallery import migrate

ROOT = Path(__file__).resolve().parents[1]
SUPPORTED = (
    "use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE "
    "(postgresql+psycopg:// and postgresql+psycopg2:// are the same: psycopg 3 drives both)"
)


def cqaface(*args: str, tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The real command, with only the given CQAFACE_* settings (data under ``tmp``)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CQAFACE_")}
    clean.update(CQAFACE_DATA_DIR=str(tmp / "var"), **env)
    return subprocess.run(
        [sys.executable, "-m", "identify.cli", *args],
        env=clean,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head()


@pytest.fixture
def sqlite_gallery(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'gallery.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    path = tmp_path / "probe.jpg"
    Image.new("RGB", (64, 64), (120, 100, 90)).save(path)
    return path


# ----- CQAFACE_DATABASE_URL: which URLs ----------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql+psycopg2", "postgresql", "postgresql+psycopg"])
def test_each_postgresql_url_form_migrates_a_real_database_with_psycopg_3(
    scheme: str, postgres_database, tmp_path: Path
) -> None:
    url = postgres_database()  # postgresql+psycopg://USER@HOST:PORT/NAME
    given = scheme + url[url.index("://") :]
    out = cqaface("db", "upgrade", tmp=tmp_path, CQAFACE_DATABASE_URL=given)
    assert (out.returncode, out.stdout) == (0, "")
    assert out.stderr == f"database {url} at head\n"  # the driver that ran: psycopg 3
    out = cqaface("db", "current", tmp=tmp_path, CQAFACE_DATABASE_URL=given)
    assert (out.returncode, out.stdout, out.stderr) == (0, f"{head_revision()}\n", "")


def test_supported_urls_map_postgresql_to_psycopg_3_and_keep_the_rest_verbatim() -> None:
    url = "//u:p%40ss@db.example:6543/gallery?sslmode=require"
    for scheme in ("postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        assert settings.supported_url(f"{scheme}:{url}") == f"postgresql+psycopg:{url}"
    assert settings.supported_url("sqlite:////srv/g.db") == "sqlite:////srv/g.db"
    assert settings.supported_url("sqlite+pysqlite://") == "sqlite+pysqlite://"


@pytest.mark.parametrize(
    "scheme", ["mysql", "mysql+pymysql", "postgresql+asyncpg", "sqlite+aiosqlite", "oracle"]
)
def test_an_unsupported_database_url_is_one_line_naming_the_supported_ones(
    scheme: str, tmp_path: Path
) -> None:
    url = f"{scheme}://admin:s3cret@db.example:3306/gallery"
    out = cqaface("db", "upgrade", tmp=tmp_path, CQAFACE_DATABASE_URL=url)
    assert out.returncode == 2
    assert out.stderr == (
        f"cqaface db: error: CQAFACE_DATABASE_URL: unsupported database {scheme}://: {SUPPORTED}\n"
    )
    assert "s3cret" not in out.stderr + out.stdout


def test_a_database_url_that_is_no_url_is_one_line_that_does_not_echo_it(
    tmp_path: Path,
) -> None:
    out = cqaface("gallery", "subjects", tmp=tmp_path, CQAFACE_DATABASE_URL="admin:s3cret@db")
    assert out.returncode == 2
    assert out.stderr == (
        f"cqaface gallery: error: CQAFACE_DATABASE_URL is not a database URL: {SUPPORTED}\n"
    )


# ----- PostgreSQL not reachable -----------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["db", "upgrade"],
        ["identify", "PROBE"],
        ["enrol", "FOLDER"],
        ["gallery", "add", "alice", "PROBE"],
        ["gallery", "subjects"],
        ["job", "list"],
    ],
)
def test_postgresql_not_listening_is_one_line_with_host_port_and_cause_and_status_3(
    command: list[str], probe: Path, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    args = [str(probe) if a == "PROBE" else str(tmp_path) if a == "FOLDER" else a for a in command]
    url = f"postgresql+psycopg2://cqaface:s3cret@127.0.0.1:{port}/cqaface"
    out = cqaface(*args, tmp=tmp_path, CQAFACE_DATABASE_URL=url)
    assert (out.returncode, out.stdout) == (3, "")
    assert out.stderr == (
        f"cqaface {command[0]}: error: cannot connect to the database at 127.0.0.1:{port} "
        "(CQAFACE_DATABASE_URL): Connection refused\n"
    )


def test_a_database_that_does_not_exist_is_named_in_one_line(
    postgres_database, tmp_path: Path
) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(postgres_database()).set(database="no_such_gallery")
    given = url.render_as_string(hide_password=False)
    out = cqaface("db", "upgrade", tmp=tmp_path, CQAFACE_DATABASE_URL=given)
    assert (out.returncode, out.stdout) == (3, "")
    assert out.stderr == (
        f"cqaface db: error: cannot connect to the database at {url.host}:{url.port} "
        '(CQAFACE_DATABASE_URL): database "no_such_gallery" does not exist\n'
    )


# ----- A SQLite file that cannot serve --------------------------------------------------


@pytest.mark.parametrize("command", [["db", "upgrade"], ["gallery", "subjects"], ["job", "list"]])
def test_a_sqlite_file_that_is_something_else_is_one_line_and_left_as_it_was(
    command: list[str], tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a gallery\n" * 200)
    out = cqaface(*command, tmp=tmp_path, CQAFACE_DATABASE_URL=f"sqlite:///{notes}")
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (
        f"cqaface {command[0]}: error: cannot use the database {notes} "
        "(CQAFACE_DATABASE_URL): file is not a database\n"
    )
    assert notes.read_text() == "not a gallery\n" * 200


def test_a_sqlite_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    url = f"sqlite:///{blocker}/gallery/g.db"
    out = cqaface("db", "upgrade", tmp=tmp_path, CQAFACE_DATABASE_URL=url)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (
        f"cqaface db: error: cannot create the folder {blocker}/gallery for the database "
        "(CQAFACE_DATABASE_URL): Not a directory\n"
    )


def test_a_sqlite_file_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    """/proc takes no new files, whoever runs the suite (root included)."""
    out = cqaface("db", "upgrade", tmp=tmp_path, CQAFACE_DATABASE_URL="sqlite:////proc/g.db")
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (
        "cqaface db: error: cannot use the database /proc/g.db (CQAFACE_DATABASE_URL): "
        "unable to open database file\n"
    )


# ----- Redis not reachable ----------------------------------------------------------------


@pytest.mark.parametrize("command", [["enrol", "--detach", "FOLDER"], ["enrol", "FOLDER"]])
def test_enrol_with_the_broker_not_listening_is_one_line_and_leaves_no_job(
    command: list[str], sqlite_gallery: str, probe: Path, tmp_path: Path
) -> None:
    (tmp_path / "photos" / "alice").mkdir(parents=True)
    probe.rename(tmp_path / "photos" / "alice" / "1.jpg")
    port = free_port()
    env = {
        "CQAFACE_DATABASE_URL": sqlite_gallery,
        "CQAFACE_BROKER_URL": f"redis://:s3cret@127.0.0.1:{port}/0",
    }
    args = [str(tmp_path / "photos") if a == "FOLDER" else a for a in command]
    out = cqaface(*args, tmp=tmp_path, **env)
    assert (out.returncode, out.stdout) == (3, "")
    assert out.stderr == (
        f"cqaface enrol: error: cannot connect to the broker at 127.0.0.1:{port} "
        "(CQAFACE_BROKER_URL): Connection refused\n"
    )
    listed = cqaface("job", "list", tmp=tmp_path, **env)
    assert (listed.returncode, listed.stdout) == (0, "")


def test_a_worker_with_the_broker_not_listening_exits_at_once_with_one_line(
    sqlite_gallery: str, tmp_path: Path
) -> None:
    port = free_port()
    out = cqaface(
        "worker",
        tmp=tmp_path,
        CQAFACE_DATABASE_URL=sqlite_gallery,
        CQAFACE_BROKER_URL=f"redis://127.0.0.1:{port}/0",
    )
    assert (out.returncode, out.stdout) == (3, "")
    assert out.stderr == (
        f"cqaface worker: error: cannot connect to the broker at 127.0.0.1:{port} "
        "(CQAFACE_BROKER_URL): Connection refused\n"
    )


# ----- CQAFACE_MODEL ----------------------------------------------------------------------


def _model_files(tmp: Path) -> dict[str, Path]:
    files = {name: tmp / f"{name}.pt" for name in ("garbage", "truncated", "empty", "other")}
    files["garbage"].write_text("this is not a checkpoint\n")
    files["truncated"].write_bytes(DEFAULT_MODEL.read_bytes()[:1000])
    files["empty"].write_bytes(b"")
    torch.save({"weights": torch.zeros(2)}, files["other"])  # a torch file, not ours
    return files


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing", "no model checkpoint at {path}: set CQAFACE_MODEL or pass --model "
         "(a checkpoint written by `cqaface train`)"),
        ("garbage", "{path} is not a readable checkpoint"),
        ("truncated", "{path} is not a readable checkpoint"),
        ("empty", "{path} is not a readable checkpoint"),
        ("other", "{path} is not a CQA-Face checkpoint"),
    ],
)  # fmt: skip
def test_a_model_file_that_is_missing_or_no_checkpoint_is_one_line_and_status_2(
    name: str, message: str, sqlite_gallery: str, probe: Path, tmp_path: Path
) -> None:
    path = _model_files(tmp_path).get(name, tmp_path / "nonexistent.pt")
    env = {"CQAFACE_DATABASE_URL": sqlite_gallery, "CQAFACE_MODEL": str(path)}
    out = cqaface("identify", str(probe), tmp=tmp_path, **env)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == f"cqaface identify: error: {message.format(path=path)}\n"


def test_a_runtime_that_does_not_exist_is_one_line_naming_the_choices(
    sqlite_gallery: str, probe: Path, tmp_path: Path
) -> None:
    env = {"CQAFACE_DATABASE_URL": sqlite_gallery, "CQAFACE_RUNTIME": "fast"}
    out = cqaface("identify", str(probe), tmp=tmp_path, **env)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == (
        "cqaface identify: error: CQAFACE_RUNTIME='fast': expected one of auto, torch, onnx\n"
    )


# ----- Any setting, read when the command starts -------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CQAFACE_PORT", "eighty", "CQAFACE_PORT='eighty' is not a int"),
        ("CQAFACE_FAR", "2", "CQAFACE_FAR=2.0 must lie strictly between 0 and 1"),
        ("CQAFACE_KEEP", "all", "CQAFACE_KEEP='all': expected one of crops, images, none"),
    ],
)
def test_a_bad_setting_stops_any_command_at_start_in_one_line(
    variable: str, value: str, message: str, sqlite_gallery: str, tmp_path: Path
) -> None:
    """Every setting is read when the command starts, also one the command has no use for:
    the operator learns of a bad value at once, not at the first request that reads it."""
    out = cqaface(
        "job", "list", tmp=tmp_path, CQAFACE_DATABASE_URL=sqlite_gallery, **{variable: value}
    )
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == f"cqaface job: error: {message}\n"
