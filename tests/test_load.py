"""Under load: 50 concurrent clients identifying real photos for a minute against a gallery of
10,000 subjects, through `cqaface serve` on loopback. Every request must succeed; the latency
figures are reported (var/test-artifacts/load.json), not asserted: speed belongs to
benchmarks (benchmarks/bench_load.py), and this machine is shared."""

from __future__ import annotations

import json
import os

import pytest
from load_client import hammer, seed_templates
from server_process import ROOT, cli, request, stack_env, start_server

pytestmark = pytest.mark.slow

CLIENTS = 50
SUBJECTS = 10_000
SECONDS = float(os.environ.get("CQAFACE_LOAD_SECONDS", "60"))


@pytest.fixture(scope="module")
def server(postgres_database, tmp_path_factory):
    from embedder import checkpoint, settings
    from identify.gallery import migrate

    tmp = tmp_path_factory.mktemp("load")
    url = postgres_database()
    migrate.upgrade(url)
    seed_templates(url, checkpoint.load(settings.model_path()).version, SUBJECTS)
    env = stack_env(url, tmp, broker=False)
    key = cli(env, "apikey", "create", "--name", "load", "--scopes", "identify,admin").strip()
    process, base = start_server(env, tmp)
    yield base, key
    process.stop()


def test_fifty_clients_identifying_for_a_minute_all_get_answers(server, celeba_photos_dir):
    base, key = server
    status, health = request("GET", f"{base}/api/v1/health")
    assert status == 200 and health["index"]["templates"] == SUBJECTS
    probes = [sorted(d.glob("*.jpg"))[0] for d in sorted(celeba_photos_dir.iterdir())[:10]]

    report = hammer(base, key, probes, CLIENTS, SECONDS)

    figures = report.to_json()
    out = ROOT / "var" / "test-artifacts" / "load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nload: {json.dumps(figures)}")
    assert report.statuses == {200: len(report.latencies)}, report.errors[:5]
    assert min(report.per_client) >= 1  # no client starved
