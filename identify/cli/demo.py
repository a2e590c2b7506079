"""`make demo`'s helpers around the real commands: split a folder of people into a gallery and
held-back probes, print the probes' answers as a table, and make the demo's admin login.

    python -m identify.cli.demo prepare GALLERY_DIR OUT_DIR [--subjects N]
    cqaface identify $(cat OUT_DIR/probes.txt) | python -m identify.cli.demo report OUT_DIR
    python -m identify.cli.demo login
"""

from __future__ import annotations

import argparse
import csv
import json
import secrets
import sys
from pathlib import Path

from identify.gallery.enroller import photos_by_subject
from identify.integers import argument

DEMO_EMAIL = "admin@demo.local"


def prepare(gallery: Path, out: Path, subjects: int) -> None:
    """The first ``subjects`` people but for one photo each go to `gallery.csv`; that photo is
    a probe (`probes.txt`), and so is one photo of someone outside the gallery (`unknown`)."""
    by_subject: dict[str, list[Path]] = {}
    for name, path in photos_by_subject(gallery):
        by_subject.setdefault(name, []).append(path)
    names = sorted(n for n, photos in by_subject.items() if len(photos) >= 2)
    if not names:
        raise SystemExit(f"{gallery}: no subject folder with two photos or more")
    chosen, outsiders = names[:subjects], names[subjects:]
    out.mkdir(parents=True, exist_ok=True)
    truth = {}
    with (out / "gallery.csv").open("w", newline="") as listing:
        rows = csv.writer(listing)
        rows.writerow(("subject", "path"))
        for name in chosen:
            *enrolled, held_back = by_subject[name]
            rows.writerows((name, str(p.resolve())) for p in enrolled)
            truth[str(held_back.resolve())] = name
    probes = list(truth)[:8]
    if outsiders:
        stranger = str(by_subject[outsiders[0]][0].resolve())
        probes.append(stranger)
        truth[stranger] = "unknown"
    (out / "probes.txt").write_text("\n".join(probes) + "\n")
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    enrolled = sum(len(by_subject[n]) - 1 for n in chosen)
    print(f"demo gallery: {len(chosen)} subjects, {enrolled} photos; {len(probes)} probes")


def report(out: Path, answers: list[dict]) -> None:
    """One line a probe face: who it is, the best candidate, the decision at the threshold."""
    truth = json.loads((out / "truth.json").read_text())
    ranked = decided = known = 0
    print(f"\n{'probe':<28} {'truth':<12} {'decision':<12} {'score':>6}  top-3 candidates")
    for answer in answers:
        path = answer.get("path", "")
        expected = truth.get(path, "?")
        if "error" in answer:
            print(f"{Path(path).name:<28} {expected:<12} {answer['error']['code']:<12}")
            continue
        decision = answer["decision"]
        said = decision if isinstance(decision, str) else decision["name"]
        matches = answer["matches"]
        score = matches[0]["score"] if matches else float("nan")
        top = ", ".join(f"{m['name']} {m['score']:.2f}" for m in matches[:3])
        decided += said == expected
        if expected != "unknown":
            known += 1
            ranked += bool(matches) and matches[0]["name"] == expected
        print(f"{Path(path).name:<28} {expected:<12} {said:<12} {score:6.3f}  {top}")
    print(
        f"\nRank-1 right for {ranked} of {known} people in the gallery; {decided} of "
        f"{len(answers)} decisions right at the\nthreshold (a stranger should be 'unknown'). "
        "The model card (embedder/weights/MODEL_CARD.md)\ngives the shipped model's measured "
        "accuracy and limits."
    )


def login(database_url: str) -> None:
    """The demo's admin, with a new random password each run (there is no default one)."""
    from sqlalchemy import select

    from identify.gallery.db import make_engine, session_factory
    from identify.gallery.tables import User
    from identify.web import auth

    password = secrets.token_urlsafe(12)
    with session_factory(make_engine(database_url))() as session, session.begin():
        user = session.scalars(select(User).where(User.email == DEMO_EMAIL)).first()
        if user is None:
            auth.create_user(session, DEMO_EMAIL, "admin", password, "Demo admin")
        else:
            auth.set_password(user, password)
    print(f"log in as {DEMO_EMAIL} with the password {password}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m identify.cli.demo")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare")
    p.add_argument("gallery", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--subjects", type=argument("--subjects", minimum=1), default=30)
    p = commands.add_parser("report")
    p.add_argument("out", type=Path)
    commands.add_parser("login")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.gallery, args.out, args.subjects)
    elif args.command == "report":
        report(args.out, [json.loads(line) for line in sys.stdin if line.strip()])
    else:
        from identify.settings import Settings

        login(Settings.from_env().database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
