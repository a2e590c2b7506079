"""`cqaface gallery hygiene report | move | remove | merge | undo | dismiss`: the gallery's
hygiene report and the actions that fix what it finds (identify.gallery.hygiene), in JSON
lines. A refused action is one line on stderr: exit status 2 for an unknown id or a bad
argument, 1 for a conflict (a merge that already happened, an undo after a change)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from identify.cli.core import _services
from identify.integers import id_argument

EXIT_CONFLICT = 1
EXIT_REFUSED = 2


def register(gallery_commands: argparse._SubParsersAction) -> None:
    hygiene = gallery_commands.add_parser(
        "hygiene",
        help="outlier faces, likely same-person subjects, and the actions that fix them",
    )
    actions = hygiene.add_subparsers(dest="hygiene_command", required=True, metavar="ACTION")
    p = actions.add_parser(
        "report",
        help="compute a report (resuming one cut short) and print its findings (JSON lines)",
        description="One JSON line per finding still open ({kind: outlier, face_id, "
        "subject_id, score, best_other} or {kind: same_person, subject_a, subject_b, score}), "
        "then one line {report, status, threshold, counts}. A report cut short (a killed "
        "process) is resumed where it stopped; --show ID prints a report without computing.",
    )
    p.add_argument("--show", type=id_argument("--show"), help="print report ID as it stands")
    p.set_defaults(handler=report)
    p = actions.add_parser("move", help="move a face (with its photo) to another subject")
    p.add_argument("face_id", type=id_argument("face_id"))
    p.add_argument("subject_id", type=id_argument("subject_id"))
    p.set_defaults(handler=lambda a: _act(a, "move_face", a.face_id, a.subject_id))
    p = actions.add_parser("remove", help="remove a face (and its photo if it holds no other)")
    p.add_argument("face_id", type=id_argument("face_id"))
    p.set_defaults(handler=lambda a: _act(a, "remove_face", a.face_id))
    p = actions.add_parser("merge", help="merge subject SOURCE into TARGET (undoable)")
    p.add_argument("source_id", type=id_argument("source_id"))
    p.add_argument("target_id", type=id_argument("target_id"))
    p.set_defaults(handler=lambda a: _act(a, "merge", a.source_id, a.target_id))
    p = actions.add_parser("undo", help="undo a merge (while the target is as it left it)")
    p.add_argument("merge_id", type=id_argument("merge_id"))
    p.set_defaults(handler=lambda a: _act(a, "undo_merge", a.merge_id))
    p = actions.add_parser("dismiss", help="two subjects are two people: never list the pair")
    p.add_argument("subject_a", type=id_argument("subject_a"))
    p.add_argument("subject_b", type=id_argument("subject_b"))
    p.set_defaults(handler=lambda a: _act(a, "dismiss", a.subject_a, a.subject_b))
    for action in actions.choices.values():
        action.add_argument(
            "--model", type=Path, help="checkpoint (default: CQAFACE_MODEL or shipped)"
        )


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _refused(error: Exception, status: int) -> int:
    print(f"cqaface gallery hygiene: error: {error}", file=sys.stderr)
    return status


def _act(args: argparse.Namespace, action: str, *ids: int) -> int:
    from identify.gallery import hygiene

    held = _services(args)
    held.index.open()  # the index file follows the change
    try:
        outcome = getattr(hygiene, action)(held.store, *ids)
    except hygiene.Conflict as error:
        return _refused(error, EXIT_CONFLICT)
    except hygiene.HygieneError as error:
        return _refused(error, EXIT_REFUSED)
    held.save_indexes()
    _emit(outcome.to_json())
    return 0


def report(args: argparse.Namespace) -> int:
    from identify.gallery import hygiene

    held = _services(args)
    store = held.store
    try:
        if args.show is not None:
            found = hygiene.report_json(store, args.show)
        else:
            report_id = hygiene.unfinished_report(store) or hygiene.create_report(
                store, held.hygiene_threshold()
            )
            held.run_hygiene_report(report_id)
            found = hygiene.report_json(store, report_id)
    except hygiene.HygieneError as error:
        return _refused(error, EXIT_REFUSED)
    for outlier in found["outliers"]:
        _emit({"kind": "outlier", **outlier})
    for pair in found["same_person"]:
        _emit({"kind": "same_person", **pair})
    _emit(
        {
            "report": found["id"],
            "status": found["status"],
            "threshold": found["threshold"],
            "counts": found["counts"],
        }
    )
    return 0
