"""Where a bulk enrolment's photos come from, as (subject name, photo path) pairs: a server
folder of subject folders, an uploaded zip archive, or a list of files.

Every source is untrusted: a folder named by an API user must lie under the configured import
roots once symlinks and `..` are resolved, and a zip archive is extracted member by member
with no absolute path, no `..`, no symlink, and limits on member count, total size and
compression ratio that are checked against the bytes actually written, not the headers.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from identify.gallery import jobs
from identify.gallery.enroller import PHOTO_SUFFIXES
from identify.gallery.jobs import upload_file
from identify.settings import Settings

# (subject name, photo path); for an archive, the member's name inside it (its photo is at
# identify.gallery.jobs.upload_file(work dir, name)). Subject names are checked against the
# name policy when the job is made (identify.gallery.jobs.create_job): a name it refuses fails
# its items, not the whole source.
Item = tuple[str, Path | str]

_COPY_BLOCK = 1 << 20


@dataclass(frozen=True)
class NewJob:
    id: int
    kind: str  # folder, zip or files
    items: int


def make_job(
    target: jobs.Target,
    source: BinaryIO | str | os.PathLike[str],
    *,
    settings: Settings,
    user_id: int | None = None,
    restricted: bool = True,
    name: str | None = None,
    min_quality: float | None = None,
) -> NewJob:
    """A queued job made of ``source``: an uploaded archive (a stream), a
    folder of subject folders, or (not ``restricted``: the CLI's own files) a .zip or a CSV/JSON
    list on this machine. ``restricted``: a folder must lie under the settings' import roots
    (CQAFACE_IMPORT_ROOTS); an archive is unpacked under their DATA_DIR/uploads. The web
    and the CLI both make their jobs here; raises SourceError for a source refused as a whole,
    and leaves nothing behind then. ``min_quality`` is the job's own minimum face quality (None:
    CQAFACE_ENROL_MIN_QUALITY's when it runs)."""
    options: dict[str, Any] = {} if min_quality is None else {"min_quality": min_quality}
    kind = "zip"
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if restricted or path.is_dir():
            roots = settings.import_roots
            kind, items = "folder", folder_items(path, restricted=restricted, roots=roots)
        elif path.suffix.lower() != ".zip":
            kind, items = "files", list_items(path, restricted=False)
    if kind == "zip":
        items, work_dir = unpacked_zip(source, settings)
        options["work_dir"] = str(work_dir)
    job_id = jobs.create_job(
        target,
        items,
        source=name or str(source),
        kind=kind,
        user_id=user_id,
        options=options or None,
    )
    return NewJob(job_id, kind, len(items))


def new_upload_dir(uploads: Path) -> Path:
    """A fresh folder under ``uploads`` (DATA_DIR/uploads) for an archive's photos (removed
    with its job)."""
    path = uploads / uuid.uuid4().hex
    path.mkdir(parents=True)
    return path


class SourceError(Exception):
    """A source refused as a whole; ``code`` is stable (for the API), the message is for
    people: not_a_folder, outside_import_roots, empty_source, not_a_zip, zip_slip, zip_bomb,
    too_large, bad_list."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _check_import_roots(path: Path, roots: tuple[Path, ...]) -> None:
    if not any(_inside(path, root) for root in roots):
        where = ", ".join(map(str, roots)) or "none configured (CQAFACE_IMPORT_ROOTS)"
        raise SourceError("outside_import_roots", f"{path} is not under an import root: {where}")


def _is_photo(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in PHOTO_SUFFIXES and not name.startswith(".")


def folder_items(
    root: str | os.PathLike[str], *, restricted: bool, roots: tuple[Path, ...] = ()
) -> list[Item]:
    """Every photo of ``root/<subject>/<photo>``, the subject named after its folder.

    ``restricted`` (a web or API user's request): ``root`` and every photo, symlinks and `..`
    resolved, must lie under the import ``roots`` (CQAFACE_IMPORT_ROOTS); a link leading out
    is refused."""
    resolved = Path(root).resolve()
    if restricted:
        _check_import_roots(resolved, roots)
    if not resolved.is_dir():
        raise SourceError("not_a_folder", f"{root} is not a folder of subject folders")
    items = []
    for folder in sorted(p for p in resolved.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if not (path.is_file() and _is_photo(path.name)):
                continue
            if restricted:
                _check_import_roots(path.resolve(), roots)
            items.append((folder.name, path))
    if not items:
        raise SourceError("empty_source", f"no photos under {root} (expected SUBJECT/PHOTO)")
    return items


def zip_items(
    archive: BinaryIO | str | os.PathLike[str],
    destination_dir: Path,
    limits: Settings | None = None,
) -> list[Item]:
    """Extract the photos of an uploaded archive into ``destination_dir``, each under a
    generated name (identify.gallery.jobs.upload_file), and list them by member name.

    Layout: ``SUBJECT/PHOTO``, or all of it inside one top folder (``TOP/SUBJECT/PHOTO``);
    other members (photos at the top, deeper files, other suffixes, ``__MACOSX``) are skipped.
    Refused as a whole: not a zip (not_a_zip), a member with an absolute path, `..` or a
    symlink (zip_slip), more members than CQAFACE_ZIP_MAX_MEMBERS, more bytes than
    CQAFACE_ZIP_MAX_BYTES or a member compressed more than CQAFACE_ZIP_MAX_RATIO times
    (zip_bomb; the ``limits`` settings, default their defaults); what was extracted is then
    removed."""
    try:
        bundle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise SourceError("not_a_zip", f"not a zip archive: {error}") from None
    destination = Path(destination_dir).resolve()
    with bundle:
        members = bundle.infolist()
        _check_members(members, limits or Settings())
        photos = _photo_members(members)
        if not photos:
            raise SourceError("empty_source", "no photos in the archive (expected SUBJECT/PHOTO)")
        destination.mkdir(parents=True, exist_ok=True)
        try:
            for member, _subject, _name in photos:
                _extract(bundle, member, upload_file(destination, member.filename))
            return [(subject, member.filename) for member, subject, _name in photos]
        except BaseException:
            shutil.rmtree(destination, ignore_errors=True)
            raise


def unpacked_zip(
    archive: BinaryIO | str | os.PathLike[str], settings: Settings
) -> tuple[list[Item], Path]:
    """An archive extracted into a fresh upload folder: its items, and the folder (removed with
    its job). A refused archive leaves no folder behind."""
    work_dir = new_upload_dir(settings.uploads_dir)
    try:
        return zip_items(archive, work_dir, settings), work_dir
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise


def _check_members(members: list[zipfile.ZipInfo], limits: Settings) -> None:
    if len(members) > limits.zip_max_members:
        raise SourceError("zip_bomb", f"{len(members)} members, above the limit")
    total = 0
    for member in members:
        name = member.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise SourceError("zip_slip", f"member {name!r} points outside the archive")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise SourceError("zip_slip", f"member {name!r} is a symbolic link")
        total += member.file_size
        if member.file_size > _COPY_BLOCK and member.file_size > limits.zip_max_ratio * max(
            member.compress_size, 1
        ):
            raise SourceError("zip_bomb", f"member {name!r} is compressed suspiciously much")
    if total > limits.zip_max_bytes:
        raise SourceError("zip_bomb", f"{total} bytes uncompressed, above the limit")


def _photo_members(members: list[zipfile.ZipInfo]) -> list[tuple[zipfile.ZipInfo, str, str]]:
    files = [
        (m, parts)
        for m in members
        if not m.is_dir()
        and not m.filename.startswith("__MACOSX/")
        and (parts := PurePosixPath(m.filename).parts)  # "." names no file
    ]
    tops = {parts[0] for _, parts in files}
    nested = len(tops) == 1 and all(len(parts) == 3 for _, parts in files)
    chosen = []
    for member, parts in files:
        if nested:
            parts = parts[1:]
        if len(parts) == 2 and _is_photo(parts[1]) and not parts[0].startswith("."):
            chosen.append((member, parts[0], parts[1]))
    return chosen


def _extract(bundle: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path) -> None:
    """Copy one member, stopping at the size its header declared (a lying header is a bomb)."""
    written = 0
    try:
        with bundle.open(member) as source, open(target, "wb") as out:
            while block := source.read(_COPY_BLOCK):
                written += len(block)
                if written > member.file_size:
                    raise SourceError("zip_bomb", f"member {member.filename!r} exceeds its size")
                out.write(block)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        EOFError,
        zlib.error,
    ) as error:
        # A broken archive is the sender's error; an OSError (a full disk) is the server's.
        raise SourceError("not_a_zip", f"cannot extract {member.filename!r}: {error}") from None


def list_items(
    listing: str | os.PathLike[str],
    *,
    base_dir: Path | None = None,
    restricted: bool,
    roots: tuple[Path, ...] = (),
) -> list[Item]:
    """The photos of a list: CSV lines ``subject,path`` or JSON lines
    ``{"subject": ..., "path": ...}``; relative paths are relative to ``base_dir`` (default:
    the list file's folder). ``restricted``: every photo under the import ``roots``."""
    source = Path(listing)
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SourceError("bad_list", f"{listing} is not UTF-8 text: {error.reason}") from None
    base = base_dir or source.parent
    items = []
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and lines[0].lstrip().startswith("{"):
        try:
            rows = [json.loads(line) for line in lines]
            pairs = [(str(r["subject"]), str(r["path"])) for r in rows]
        except (ValueError, KeyError, TypeError) as error:
            raise SourceError("bad_list", f"not JSON lines of subject and path: {error}") from None
    else:
        pairs = [tuple(row[:2]) for row in csv.reader(io.StringIO("\n".join(lines)))]
        if any(len(pair) != 2 for pair in pairs):
            raise SourceError("bad_list", "each CSV line must be subject,path")
        if pairs and pairs[0] == ("subject", "path"):
            pairs = pairs[1:]
    for subject, raw in pairs:
        path = (base / raw) if not Path(raw).is_absolute() else Path(raw)
        if restricted:
            _check_import_roots(path.resolve(), roots)
        items.append((subject.strip(), path))
    if not items:
        raise SourceError("empty_source", f"no photos listed in {listing}")
    return items
