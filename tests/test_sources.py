"""Bulk enrolment sources are untrusted: a folder outside the import roots, a zip that writes
outside its destination or expands without bound are refused as a whole with a stable code,
and nothing is written outside the destination."""

from __future__ import annotations

import dataclasses
import io
import stat
import zipfile
from pathlib import Path

import pytest

from identify.gallery.jobs import upload_file
from identify.gallery.sources import SourceError, folder_items, list_items, make_job, zip_items
from identify.settings import Settings


def _zip(members: dict[str, bytes], *, symlink: str | None = None) -> io.BytesIO:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, content in members.items():
            bundle.writestr(name, content)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            bundle.writestr(info, "/etc/passwd")
    data.seek(0)
    return data


def _refused(code: str, archive, destination: Path, limits: Settings | None = None) -> None:
    with pytest.raises(SourceError) as caught:
        zip_items(archive, destination, limits)
    assert caught.value.code == code, caught.value.message
    assert not destination.exists() or not any(destination.rglob("*"))


def test_a_zip_gives_one_subject_per_folder_with_or_without_a_top_folder(tmp_path):
    flat = _zip({"ada/1.jpg": b"a1", "ada/2.png": b"a2", "bob/1.jpg": b"b1", "notes.txt": b""})
    items = zip_items(flat, tmp_path / "flat")
    assert items == [("ada", "ada/1.jpg"), ("ada", "ada/2.png"), ("bob", "bob/1.jpg")]
    stored = upload_file(tmp_path / "flat", "ada/1.jpg")
    assert stored.read_bytes() == b"a1" and stored.parent == tmp_path / "flat"
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == sorted(
        upload_file(tmp_path / "flat", name).name for _, name in items
    )
    nested = _zip({"upload/ada/1.jpg": b"a1", "upload/bob/1.jpg": b"b1"})
    assert [s for s, _ in zip_items(nested, tmp_path / "nested")] == ["ada", "bob"]


def test_archive_names_are_never_paths_a_5000_character_folder_name_included(tmp_path):
    """Each photo is stored under a generated name, whatever its member's name: a folder name
    longer than any file name (the OSError of issue 33), a bidi override, a NUL-free oddity."""
    long_name = "A" * 5000
    archive = _zip({f"{long_name}/1.jpg": b"l", "Bob\u202eevil/1.jpg": b"b", "ok/1.jpg": b"o"})
    items = zip_items(archive, tmp_path / "up")
    assert items == [
        (long_name, f"{long_name}/1.jpg"),
        ("Bob\u202eevil", "Bob\u202eevil/1.jpg"),
        ("ok", "ok/1.jpg"),
    ]
    names = sorted(p.name for p in (tmp_path / "up").iterdir())
    assert all(len(name) == 36 and name.endswith(".jpg") for name in names)
    assert upload_file(tmp_path / "up", f"{long_name}/1.jpg").read_bytes() == b"l"


def test_zip_slip_members_are_refused(tmp_path):
    _refused("zip_slip", _zip({"ada/../../evil.jpg": b"x"}), tmp_path / "a")
    _refused("zip_slip", _zip({"/tmp/evil.jpg": b"x"}), tmp_path / "b")
    _refused("zip_slip", _zip({"ada/1.jpg": b"x"}, symlink="ada/link.jpg"), tmp_path / "c")
    assert not (tmp_path.parent / "evil.jpg").exists()


def test_zip_bombs_are_refused(tmp_path):
    _refused("zip_bomb", _zip({"ada/1.jpg": bytes(50 * 2**20)}), tmp_path / "ratio")
    ten = Settings.from_env({"CQAFACE_ZIP_MAX_MEMBERS": "10"})
    count = _zip({f"ada/{k}.jpg": b"x" for k in range(11)})
    _refused("zip_bomb", count, tmp_path / "count", ten)
    small = Settings.from_env({"CQAFACE_ZIP_MAX_BYTES": "1000"})
    _refused(
        "zip_bomb", _zip({"ada/1.jpg": bytes(600), "bob/1.jpg": bytes(600)}), tmp_path / "n", small
    )


def test_a_lying_header_is_caught_while_extracting(tmp_path):
    archive = _zip({"ada/1.jpg": bytes(4096)})
    raw = bytearray(archive.getvalue())
    # Shrink the declared size in the central directory: the real bytes now exceed it.
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 24 : central + 28] = (100).to_bytes(4, "little")
    with pytest.raises(SourceError) as caught:
        zip_items(io.BytesIO(bytes(raw)), tmp_path / "liar")
    assert caught.value.code in ("zip_bomb", "not_a_zip")
    assert not (tmp_path / "liar").exists()


def test_not_a_zip_and_an_empty_zip_are_refused(tmp_path):
    _refused("not_a_zip", io.BytesIO(b"this is text"), tmp_path / "text")
    _refused("empty_source", _zip({"readme.txt": b"hello"}), tmp_path / "empty")


def test_a_folder_outside_the_import_roots_is_refused_after_resolving(tmp_path):
    allowed = tmp_path / "imports"
    (allowed / "ada").mkdir(parents=True)
    (allowed / "ada" / "1.jpg").write_bytes(b"x")
    secret = tmp_path / "secret"
    (secret / "eve").mkdir(parents=True)
    (secret / "eve" / "1.jpg").write_bytes(b"x")
    roots = Settings.from_env({"CQAFACE_IMPORT_ROOTS": str(allowed)}).import_roots
    photos = folder_items(allowed, restricted=True, roots=roots)
    assert photos == [("ada", allowed.resolve() / "ada" / "1.jpg")]
    for path in (secret, allowed / ".." / "secret"):
        with pytest.raises(SourceError) as caught:
            folder_items(path, restricted=True, roots=roots)
        assert caught.value.code == "outside_import_roots"
    (allowed / "eve").symlink_to(secret / "eve", target_is_directory=True)
    with pytest.raises(SourceError) as caught:
        folder_items(allowed, restricted=True, roots=roots)
    assert caught.value.code == "outside_import_roots"
    assert len(folder_items(allowed, restricted=False)) == 2  # the operator's own CLI


def test_a_folder_that_is_missing_or_empty_is_refused(tmp_path):
    with pytest.raises(SourceError) as caught:
        folder_items(tmp_path / "missing", restricted=False)
    assert caught.value.code == "not_a_folder"
    with pytest.raises(SourceError) as caught:
        folder_items(tmp_path, restricted=True, roots=Settings.from_env({}).import_roots)
    assert caught.value.code == "outside_import_roots"
    (tmp_path / "ada").mkdir()
    with pytest.raises(SourceError) as caught:
        folder_items(tmp_path, restricted=False)
    assert caught.value.code == "empty_source"


def test_file_lists_in_csv_or_json_lines(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "list.csv").write_text("subject,path\nAda Lovelace,a.jpg\nBob,/data/b.jpg\n")
    assert list_items(tmp_path / "list.csv", restricted=False) == [
        ("Ada Lovelace", tmp_path / "a.jpg"),
        ("Bob", Path("/data/b.jpg")),
    ]
    (tmp_path / "list.jsonl").write_text('{"subject": "Ada", "path": "a.jpg"}\n')
    assert list_items(tmp_path / "list.jsonl", restricted=False) == [("Ada", tmp_path / "a.jpg")]
    (tmp_path / "bad.jsonl").write_text('{"name": "Ada"}\n')
    with pytest.raises(SourceError) as caught:
        list_items(tmp_path / "bad.jsonl", restricted=False)
    assert caught.value.code == "bad_list"


@pytest.fixture
def engine(database_url):
    from identify.gallery.db import make_engine

    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def test_every_kind_of_source_makes_its_job_in_one_place(engine, tmp_path):
    from identify.gallery.jobs import job_progress

    settings = Settings.from_env({"CQAFACE_DATA_DIR": str(tmp_path / "data")})

    folder = tmp_path / "photos"
    (folder / "ada").mkdir(parents=True)
    (folder / "ada" / "1.jpg").write_bytes(b"a1")
    archive = tmp_path / "photos.zip"
    archive.write_bytes(_zip({"ada/1.jpg": b"a1", "bob/1.jpg": b"b1"}).getvalue())
    listing = tmp_path / "list.csv"
    listing.write_text(f"ada,{folder / 'ada' / '1.jpg'}\n")
    uploaded = make_job(engine, _zip({"ada/1.jpg": b"a1"}), settings=settings, name="up.zip")
    assert (uploaded.kind, uploaded.items) == ("zip", 1)
    with pytest.raises(SourceError) as caught:
        make_job(engine, str(folder), settings=settings)
    assert caught.value.code == "outside_import_roots"
    settings = dataclasses.replace(settings, import_roots=(tmp_path.resolve(),))
    assert make_job(engine, str(folder), settings=settings).kind == "folder"
    with pytest.raises(SourceError) as caught:  # the web names folders, never files
        make_job(engine, str(archive), settings=settings)
    assert caught.value.code == "not_a_folder"
    mine = [
        make_job(engine, p, settings=settings, restricted=False) for p in (folder, archive, listing)
    ]
    assert [(j.kind, j.items) for j in mine] == [("folder", 1), ("zip", 2), ("files", 1)]
    report = job_progress(engine, uploaded.id)
    assert (report.kind, report.source, report.total) == ("zip", "up.zip", 1)


def test_a_refused_archive_leaves_no_upload_folder_behind(engine, tmp_path):
    settings = Settings.from_env({"CQAFACE_DATA_DIR": str(tmp_path / "data")})
    for restricted in (True, False):  # the web's upload, the CLI's file
        slip = _zip({"ada/../../evil.jpg": b"x"})
        source = slip if restricted else tmp_path / "slip.zip"
        if not restricted:
            source.write_bytes(slip.getvalue())
        with pytest.raises(SourceError) as caught:
            make_job(engine, source, settings=settings, restricted=restricted)
        assert caught.value.code == "zip_slip"
    uploads = tmp_path / "data" / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
