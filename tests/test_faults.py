"""Faults around a running server (`cqaface serve` on loopback, a PostgreSQL server of the
test's own): the database restarting under requests, a full disk under an upload, a corrupt
index file at start. Each ends in a clean answer, loses nothing, and the service recovers."""

from __future__ import annotations

import io
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from load_client import seed_templates
from private_postgres import PrivatePostgres
from server_process import cli, request, stack_env, start_server

pytestmark = pytest.mark.slow

SUBJECTS = 300


@pytest.fixture(scope="module")
def postgres():
    server = PrivatePostgres()
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="module")
def stack(postgres, tmp_path_factory):
    from embedder import checkpoint, settings
    from identify.gallery import migrate

    tmp = tmp_path_factory.mktemp("faults")
    migrate.upgrade(postgres.url)
    seed_templates(postgres.url, checkpoint.load(settings.model_path()).version, SUBJECTS)
    env = stack_env(postgres.url, tmp, broker=False)
    key = cli(env, "apikey", "create", "--name", "faults", "--scopes", "identify,enrol,admin")
    server, base = start_server(env, tmp)
    yield base, key.strip(), env, tmp
    server.stop()


@pytest.fixture(scope="module")
def probe(celeba_photos_dir) -> tuple[str, bytes]:
    photo = sorted(sorted(celeba_photos_dir.iterdir())[0].glob("*.jpg"))[0]
    return photo.name, photo.read_bytes()


def identify(base: str, key: str, probe: tuple[str, bytes]) -> tuple[int, dict]:
    return request("POST", f"{base}/api/v1/identify", key=key, files={"image": probe})


def test_a_database_restart_gives_clean_503s_and_then_answers_again(stack, postgres, probe):
    base, key, _, _ = stack
    assert identify(base, key, probe)[0] == 200
    postgres.stop()
    try:
        status, body = identify(base, key, probe)
        assert status == 503, body
        assert body["error"]["code"] == "unavailable"
        assert "Traceback" not in str(body)
        status, health = request("GET", f"{base}/api/v1/health")
        assert status == 503 and health["database"]["ok"] is False
    finally:
        postgres.start()
    deadline = time.monotonic() + 60
    while (status := identify(base, key, probe)[0]) != 200 and time.monotonic() < deadline:
        time.sleep(1)
    assert status == 200


@pytest.fixture
def full_uploads(stack):
    """The server's upload folder on a 256 KiB filesystem (root may mount a tmpfs here)."""
    _, _, env, _ = stack
    uploads = Path(env["CQAFACE_DATA_DIR"]) / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(uploads)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.decode().strip()}")
    yield uploads
    subprocess.run(["umount", str(uploads)], check=True)


def test_an_upload_onto_a_full_disk_is_refused_cleanly_and_stores_nothing(
    stack, full_uploads, orl_dir
):
    base, key, _, _ = stack
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as out:  # about 400 KiB of photos, stored uncompressed
        for folder in sorted(orl_dir.iterdir())[:4]:
            for photo in sorted(folder.glob("*.pgm")):
                out.write(photo, f"{folder.name}/{photo.name}")
    _, before = request("GET", f"{base}/api/v1/jobs", key=key)

    status, body = request(
        "POST",
        f"{base}/api/v1/enrolments",
        key=key,
        files={"archive": ("orl.zip", archive.getvalue())},
    )

    assert status == 507, body
    assert body["error"]["code"] == "insufficient_storage"
    _, after = request("GET", f"{base}/api/v1/jobs", key=key)
    assert after["total"] == before["total"]  # no job was made
    assert list(full_uploads.iterdir()) == []  # and no half-extracted photos are left


def test_a_corrupt_index_file_is_rebuilt_from_the_database_at_start(stack, probe):
    _, key, env, tmp = stack
    cli(env, "index", "rebuild")
    files = [p for p in Path(env["CQAFACE_INDEX_DIR"]).iterdir() if p.is_file()]
    assert files
    for path in files:
        path.write_bytes(b"\x00garbage" * 100)
    second_tmp = tmp / "second"
    second_tmp.mkdir()
    server, second = start_server(env, second_tmp)
    try:
        status, health = request("GET", f"{second}/api/v1/health")
        assert status == 200 and health["index"]["templates"] == SUBJECTS
        assert identify(second, key, probe)[0] == 200
    finally:
        server.stop()
