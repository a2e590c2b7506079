"""Identify under load: N concurrent clients for S seconds through `cqaface serve` on loopback,
against a gallery of G seeded subjects in a throwaway PostgreSQL database. Prints and writes
requests/s and p50/p99 latency.

    python benchmarks/bench_load.py --clients 50 --seconds 60 --subjects 10000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tests' server and load helpers

from load_client import hammer, seed_templates  # noqa: E402
from server_process import cli, stack_env, start_server  # noqa: E402

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--probes", type=Path, default=ROOT.parent / "shared/data/celeba-photos")
    parser.add_argument("--admin-url", default=ADMIN_URL, help="PostgreSQL to make a database in")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-load.json")
    args = parser.parse_args()

    from embedder import checkpoint, settings
    from identify.gallery import migrate

    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    name = f"cqaface_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    server = None
    try:
        migrate.upgrade(url)
        seed_templates(url, checkpoint.load(settings.model_path()).version, args.subjects)
        tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
        env = stack_env(url, tmp, broker=False)
        key = cli(env, "apikey", "create", "--name", "bench", "--scopes", "identify").strip()
        server, base = start_server(env, tmp)
        people = sorted(d for d in args.probes.iterdir() if d.is_dir())[:10]
        probes = [sorted(d.glob("*.jpg"))[0] for d in people]
        figures = {
            "subjects": args.subjects,
            **hammer(base, key, probes, args.clients, args.seconds).to_json(),
        }
    finally:
        if server is not None:
            server.stop()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(json.dumps(figures, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if set(figures["statuses"]) == {"200"} else 1


if __name__ == "__main__":
    sys.exit(main())
