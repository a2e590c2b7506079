"""Shared fixtures: where the real data lives, and skips with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CQAFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="module")
def encoder():
    """A real embedder with random weights: the vectors mean nothing, the pipeline is real."""
    import torch

    from embedder.config import ModelConfig
    from embedder.inference import Embedder
    from embedder.model import build_model
    from identify.search.encode import FaceEncoder

    torch.manual_seed(0)
    return FaceEncoder(
        Embedder(build_model(ModelConfig()).eval(), version="random-0", device="cpu")
    )


def _data(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"real data set {name!r} not found at {path} (set CQAFACE_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def orl_dir() -> Path:
    """40 subjects x 10 grey 92x112 photos: `orl/s<N>/<k>.pgm`."""
    return _data("orl")


@pytest.fixture(scope="session")
def celeba_photos_dir() -> Path:
    """100 subjects, 2,356 unaligned face-centred photos: `<identity>/<image>.jpg`."""
    return _data("celeba-photos")


@pytest.fixture(scope="session")
def celeba_aligned_dir() -> Path:
    """The reference 112x112 crops and `landmarks.csv`, aligned the way training saw them."""
    return _data("celeba-112")


@pytest.fixture(scope="session")
def celeba_identities(celeba_aligned_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """`make(n)`: a tree of the first n celeba-112 identities with 5+ crops, linked, not copied."""

    def make(n: int) -> Path:
        root = tmp_path_factory.mktemp("faces")
        chosen = [
            d
            for d in sorted(celeba_aligned_dir.iterdir())
            if d.is_dir() and len(list(d.glob("*.webp"))) >= 5
        ][:n]
        for folder in chosen:
            (root / folder.name).symlink_to(folder, target_is_directory=True)
        return root

    return make


# ----- identification core: real databases ------------------------------------------------
# PostgreSQL at 127.0.0.1:5432 (database `test`, trust auth) unless CQAFACE_TEST_POSTGRES_URL
# names another server; each session works in a throwaway database of its own.

POSTGRES_ADMIN_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)


def _postgres_admin_engine():
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    urls = (
        [os.environ["CQAFACE_TEST_POSTGRES_URL"]]
        if "CQAFACE_TEST_POSTGRES_URL" in os.environ
        else POSTGRES_ADMIN_URLS
    )
    errors = []
    for url in urls:
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return engine
        except OperationalError as error:
            errors.append(str(error).splitlines()[0])
            engine.dispose()
    pytest.skip(f"no PostgreSQL server reachable ({'; '.join(errors)})")


@pytest.fixture(scope="session")
def postgres_database():
    """A factory of fresh, empty PostgreSQL databases, all dropped at the end of the session."""
    import uuid

    from sqlalchemy import text

    admin = _postgres_admin_engine()
    created = []

    def create() -> str:
        name = f"cqaface_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return admin.url.set(database=name).render_as_string(hide_password=False)

    yield create
    with admin.connect() as connection:
        for name in created:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def _migrated_postgres(postgres_database):
    from identify.gallery import migrate

    url = postgres_database()
    migrate.upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A migrated, empty gallery database: a SQLite file, or the session's PostgreSQL one."""
    if request.param == "sqlite":
        from identify.gallery import migrate

        url = f"sqlite:///{tmp_path / 'gallery.db'}"
        migrate.upgrade(url)
        return url
    from sqlalchemy import create_engine, text

    from identify.gallery.tables import Base

    url = request.getfixturevalue("_migrated_postgres")
    engine = create_engine(url)
    with engine.begin() as connection:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url
