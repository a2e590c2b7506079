"""`cqaface db | index | reembed | gallery | identify`: the identification core from the
command line. Handlers import the heavy modules themselves, so that `cqaface --help` stays
instant."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from identify.services import Services

from identify.integers import argument, id_argument


def register(commands: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add the core's commands; returns `gallery`'s actions, which identify.cli.hygiene extends."""
    db = commands.add_parser("db", help="migrate the gallery database (Alembic)")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    p = db_commands.add_parser("upgrade", help="migrate up to REV (default: head)")
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(handler=db_upgrade)
    p = db_commands.add_parser("downgrade", help="migrate down to REV (`base`, an id, `-1`)")
    p.add_argument("revision")
    p.set_defaults(handler=db_downgrade)
    p = db_commands.add_parser("current", help="print the revision the database is at")
    p.set_defaults(handler=db_current)

    index = commands.add_parser("index", help="the FAISS index of the gallery templates")
    index_commands = index.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    p = index_commands.add_parser("rebuild", help="rebuild from the database and save")
    p.add_argument("--model", type=Path, help="checkpoint (default: CQAFACE_MODEL or shipped)")
    p.set_defaults(handler=index_rebuild)

    p = commands.add_parser("backup", help="write the gallery database to a portable zip")
    p.add_argument("output", type=Path)
    p.set_defaults(handler=backup)
    p = commands.add_parser(
        "restore", help="load a backup into an empty, migrated database; rebuild the indexes"
    )
    p.add_argument("backup", type=Path)
    p.set_defaults(handler=restore)

    p = commands.add_parser("reembed", help="re-embed the stored faces with a (new) model")
    p.add_argument("--model", type=Path, help="checkpoint (default: CQAFACE_MODEL or shipped)")
    p.add_argument("--batch-size", type=argument("--batch-size", minimum=1), default=64)
    p.set_defaults(handler=reembed)

    gallery = commands.add_parser("gallery", help="enrol photos synchronously")
    gallery_commands = gallery.add_subparsers(
        dest="gallery_command", required=True, metavar="ACTION"
    )
    p = gallery_commands.add_parser("add", help="enrol photos of one subject (JSON lines)")
    p.add_argument("subject", help="subject name (created when new)")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--model", type=Path, help="checkpoint (default: CQAFACE_MODEL or shipped)")
    p.set_defaults(handler=gallery_add)

    p = gallery_commands.add_parser("remove", help="delete a subject, an image or a face")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--subject", type=id_argument("--subject"), help="subject id: with all its photos"
    )
    target.add_argument(
        "--image", type=id_argument("--image"), help="image id: its faces and embeddings"
    )
    target.add_argument("--face", type=id_argument("--face"), help="face id: a wrong detection")
    p.add_argument("--model", type=Path, help="checkpoint (default: CQAFACE_MODEL or shipped)")
    p.set_defaults(handler=gallery_remove)
    p = gallery_commands.add_parser("subjects", help="list subjects with their photo counts")
    p.set_defaults(handler=gallery_subjects)
    p = gallery_commands.add_parser(
        "check-names",
        help="list subject names that break the name policy (JSON lines; changes nothing)",
        description="One JSON line {subject_id, name, problem} per stored subject name that "
        "the name policy (NFC, no control, format or bidi characters, at most 255 characters) "
        "would refuse; the name is shown with such characters written <U+XXXX>. Exit status 0 "
        "when every name keeps the policy, 1 when some do not.",
    )
    p.set_defaults(handler=gallery_check_names)

    p = commands.add_parser("verify", help="is the largest face of a photo this subject? (JSON)")
    p.add_argument("image", type=Path)
    p.add_argument("subject_id", type=id_argument("subject_id"))
    p.add_argument("--mask", choices=["auto", "yes", "no"], default="auto")
    p.add_argument("--model", type=Path, help="checkpoint (default: CQAFACE_MODEL or shipped)")
    p.set_defaults(handler=verify)

    p = commands.add_parser(
        "identify",
        help="identify every face of probe photos (JSON lines)",
        description="One JSON line per face found: path, box, masked, matches (top-k "
        "{subject_id, name, score}, best first) and decision ({subject_id, name, score, "
        'threshold} or "unknown"). A photo without a usable face gives a line with `error` '
        "{code, message}. Exit status 0 when at least one photo was searched, 1 when none "
        "could be.",
    )
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument(
        "--k",
        type=argument("--k", minimum=1, maximum=100),
        default=5,
        help="candidates per face (default 5)",
    )
    p.add_argument("--mask", choices=["auto", "yes", "no"], default="auto")
    p.add_argument("--model", type=Path, help="checkpoint (default: CQAFACE_MODEL or shipped)")
    p.set_defaults(handler=identify)
    return gallery_commands


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _error(path: Path, code: str, message: str) -> dict[str, Any]:
    return {"path": str(path), "error": {"code": code, "message": message}}


def db_upgrade(args: argparse.Namespace) -> int:
    from identify.gallery import migrate

    url = args.settings.database_url
    migrate.upgrade(url, revision=args.revision)
    print(f"database {_safe(url)} at {args.revision}", file=sys.stderr)
    return 0


def db_downgrade(args: argparse.Namespace) -> int:
    from identify.gallery import migrate

    url = args.settings.database_url
    migrate.downgrade(args.revision, url)
    print(f"database {_safe(url)} at {args.revision}", file=sys.stderr)
    return 0


def db_current(args: argparse.Namespace) -> int:
    from identify.gallery import migrate
    from identify.gallery.db import make_engine

    print(migrate.current(make_engine(args.settings.database_url)) or "base")
    return 0


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _migrated_engine(args: argparse.Namespace) -> Any:
    """The configured database's engine; refuses an unmigrated database."""
    from identify.gallery import migrate
    from identify.gallery.db import make_engine

    engine = make_engine(args.settings.database_url)
    if migrate.current(engine) is None:
        raise ValueError("the database has no gallery tables yet: run `cqaface db upgrade`")
    return engine


def _services(args: argparse.Namespace) -> Services:
    """This command's gallery, of the configured database for ``args.model``; refuses an
    unmigrated database."""
    from identify.gallery import migrate
    from identify.services import Services

    held = Services(args.settings, model_path=args.model)
    if migrate.current(held.engine) is None:
        raise ValueError("the database has no gallery tables yet: run `cqaface db upgrade`")
    return held


def index_rebuild(args: argparse.Namespace) -> int:
    for kind, opened in _services(args).rebuild_indexes().items():
        _emit(
            {
                "kind": kind.value,
                "templates": len(opened.index),
                "index": opened.index.kind,
                "path": str(opened.path),
            }
        )
    return 0


def backup(args: argparse.Namespace) -> int:
    from identify.gallery.backup import backup as write
    from identify.gallery.db import make_engine

    _emit(write(make_engine(args.settings.database_url), args.output).to_json())
    return 0


def restore(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from identify.gallery.backup import restore as load
    from identify.gallery.db import make_engine, session_factory
    from identify.gallery.tables import Template
    from identify.search.index_store import rebuild_indexes

    settings = args.settings
    engine = make_engine(settings.database_url)
    report = load(engine, args.backup)
    with session_factory(engine)() as session:
        versions = session.execute(select(Template.model_version, Template.dim).distinct())
        for model_version, dim in versions.all():
            rebuild_indexes(
                session,
                model_version,
                dim=dim,
                directory=settings.index_dir,
                **settings.index_options(),
            )
    _emit(report.to_json())
    return 0


def reembed(args: argparse.Namespace) -> int:
    _emit(_services(args).reembed(args.batch_size).to_json())
    return 0


def gallery_add(args: argparse.Namespace) -> int:
    from identify.subject_names import subject_name

    name = subject_name(args.subject)  # before the model loads: a refusal is one quick line
    held = _services(args)
    held.index.open()  # the index file follows the new photos
    ok = 0
    for path in args.images:
        result = held.enroller.enrol(name, path, source_name=str(path))
        ok += result.status.stored
        _emit(
            {
                "path": str(path),
                "status": result.status.value,
                "reason": result.reason,
                "subject_id": result.subject_id,
                "image_id": result.image_id,
            }
        )
    held.save_indexes()
    return 0 if ok else 1


def gallery_remove(args: argparse.Namespace) -> int:
    held = _services(args)
    held.index.open()
    store = held.store
    if args.subject is not None:
        kind, target, done = "subject", args.subject, store.delete_subject(args.subject)
    elif args.image is not None:
        kind, target, done = "image", args.image, store.delete_image(args.image)
    else:
        kind, target, done = "face", args.face, store.delete_face(args.face)
    if not done:
        raise LookupError(f"no {kind} with id {target}")
    held.save_indexes()
    _emit({"deleted": kind, "id": target})
    return 0


def gallery_subjects(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from identify.gallery.tables import Image, Subject

    with _migrated_engine(args).connect() as connection:
        rows = connection.execute(
            select(Subject.id, Subject.name, func.count(Image.id))
            .outerjoin(Image, Image.subject_id == Subject.id)
            .group_by(Subject.id, Subject.name)
            .order_by(Subject.id)
        )
        for subject_id, name, images in rows:
            _emit({"subject_id": subject_id, "name": name, "images": images})
    return 0


def gallery_check_names(args: argparse.Namespace) -> int:
    import unicodedata

    from sqlalchemy import select

    from identify.gallery.tables import Subject
    from identify.subject_names import printable, problem

    broken = 0
    with _migrated_engine(args).connect() as connection:
        for subject_id, name in connection.execute(
            select(Subject.id, Subject.name).order_by(Subject.id)
        ):
            why = problem(name)
            if why is None and unicodedata.normalize("NFC", name) != name:
                why = "the subject name is not NFC-normalised"
            if why is not None:
                broken += 1
                _emit({"subject_id": subject_id, "name": printable(name), "problem": why})
    return 1 if broken else 0


def verify(args: argparse.Namespace) -> int:
    from embedder.errors import FaceInputError

    searcher = _services(args).searcher
    try:
        answer = searcher.verify(args.image, args.subject_id, mask=args.mask)
    except FaceInputError as error:
        _emit(_error(args.image, error.code, str(error)))
        return 1
    except OSError as error:
        _emit(_error(args.image, "unreadable_file", f"cannot read the file: {error}"))
        return 1
    _emit({"path": str(args.image), **answer.to_json()})
    return 0


def identify(args: argparse.Namespace) -> int:
    from embedder.errors import FaceInputError

    searcher = _services(args).searcher
    searched = 0
    for path in args.images:
        try:
            probe = searcher.search(path, k=args.k, mask=args.mask)
        except FaceInputError as error:
            _emit(_error(path, error.code, str(error)))
            continue
        except OSError as error:
            _emit(_error(path, "unreadable_file", f"cannot read the file: {error}"))
            continue
        searched += 1
        for answer in probe.answers:
            _emit(answer.to_json(str(path)))
    return 0 if searched else 1
