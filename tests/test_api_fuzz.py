"""The JSON API fuzzed from its own contract (identify/web/openapi.json, with schemathesis)
against a real `cqaface serve` on SQLite and on PostgreSQL: every operation, with no key, with
garbage credentials, and with a key of each scope; generated bodies (JSON and multipart files),
query and path parameters, valid and invalid. No answer is a 5xx, and every answer conforms to
the spec: its status is documented, its content type and body match the documented ones.

Deterministic: hypothesis derandomised (its seed comes from the test function), a fixed
number of examples per operation and credentials, no example database, no shrinking (a failure
is recorded with its curl command and the run goes on, so that one run lists them all)."""

from __future__ import annotations

import io
import json
import time

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from server_process import cli, stack_env, start_server

from identify.web.api import OPENAPI_PATH

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SCOPES = ("identify", "enrol", "admin")
FULL_EXAMPLES = 20  # per operation and generation mode, with a key holding every scope
OTHER_EXAMPLES = 4  # per operation and mode with each other credential: mostly 401 or 403


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, tmp_path_factory, orl_dir):
    """`cqaface serve` (embedded mode, no rate limit) on a fresh database holding two
    subjects, one with a photo, and an API key of each scope and one of all scopes."""
    from identify.gallery import migrate

    tmp = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'gallery.db'}"
    else:
        url = request.getfixturevalue("postgres_database")()
    migrate.upgrade(url)
    env = stack_env(url, tmp, broker=False)
    keys = {
        scope: cli(env, "apikey", "create", "--name", f"fuzz-{scope}", "--scopes", scope).strip()
        for scope in (*SCOPES, ",".join(SCOPES))
    }
    server, base = start_server(env, tmp)
    full = {"Authorization": f"Bearer {keys[','.join(SCOPES)]}"}
    for name in ("Ada", "Bob"):
        created = requests.post(f"{base}/api/v1/subjects", json={"name": name}, headers=full)
        assert created.status_code == 201, created.text
    photo = (orl_dir / "s1" / "1.pgm").read_bytes()
    added = requests.post(
        f"{base}/api/v1/subjects/1/images",
        files={"image": ("1.pgm", io.BytesIO(photo))},
        headers=full,
    )
    assert added.status_code == 201, added.text
    yield base, keys, server
    server.stop()


def _credentials(keys: dict[str, str]) -> list[tuple[str, dict[str, str] | None, int]]:
    """(label, headers replacing the generated credentials or None to keep them, examples)."""
    everything = keys[",".join(SCOPES)]
    return [
        ("no key", {}, OTHER_EXAMPLES),
        ("generated credentials", None, OTHER_EXAMPLES),
        *((f"{scope} key", {"X-API-Key": keys[scope]}, OTHER_EXAMPLES) for scope in SCOPES),
        ("all scopes", {"Authorization": f"Bearer {everything}"}, FULL_EXAMPLES),
    ]


def _fuzz(operation, mode, headers, examples, base, session, failures) -> int:
    ran = 0

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        nonlocal ran
        ran += 1
        if headers is not None:
            for name in ("Authorization", "X-API-Key"):
                (case.headers or {}).pop(name, None)
            case.headers = {**(case.headers or {}), **headers}
        try:
            case.call_and_validate(base_url=f"{base}/api/v1", session=session, checks=CHECKS)
        except (Exception, FailureGroup) as error:  # recorded, not shrunk: the run goes on
            failures.append(f"{case.as_curl_command()}\n  {' '.join(str(error).split())[:600]}")

    try:
        run()
    except Unsatisfiable:  # no parameter or body to make invalid (GET /health)
        assert mode == GenerationMode.NEGATIVE, operation.label
    return ran


def _cover(schema, operation, headers, base, session, failures) -> int:
    """schemathesis's coverage phase: each parameter and body field at its boundaries and just
    past them (an id of 2147483647 and 2147483648, 0.5, true, a missing field), no randomness."""
    ran = 0
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    config = schema.config.generation_for(operation=operation)
    for case in schema.iter_coverage_cases(
        operation, generation_modes=modes, generation_config=config
    ):
        ran += 1
        for name in ("Authorization", "X-API-Key"):
            (case.headers or {}).pop(name, None)
        case.headers = {**(case.headers or {}), **headers}
        try:
            case.call_and_validate(base_url=f"{base}/api/v1", session=session, checks=CHECKS)
        except (Exception, FailureGroup) as error:
            failures.append(f"{case.as_curl_command()}\n  {' '.join(str(error).split())[:600]}")
    return ran


def test_every_operation_answers_within_its_contract(served):
    base, keys, server = served
    schema = schemathesis.openapi.from_path(OPENAPI_PATH)
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = {(o.method.upper(), o.path) for o in operations}
    spec = json.loads(OPENAPI_PATH.read_text())
    assert documented == {
        (m.upper(), p) for p, ops in spec["paths"].items() for m in ops if m != "parameters"
    }
    failures: list[str] = []
    full = {"Authorization": f"Bearer {keys[','.join(SCOPES)]}"}
    ran = 0
    started = time.perf_counter()
    with requests.Session() as session:
        for operation in operations:
            for label, headers, examples in _credentials(keys):
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    before = len(failures)
                    ran += _fuzz(operation, mode, headers, examples, base, session, failures)
                    for k in range(before, len(failures)):
                        failures[k] = f"{operation.label} [{label}, {mode.value}]: {failures[k]}"
            before = len(failures)
            ran += _cover(schema, operation, full, base, session, failures)
            for k in range(before, len(failures)):
                failures[k] = f"{operation.label} [all scopes, coverage]: {failures[k]}"
    seconds = time.perf_counter() - started
    print(f"\nschemathesis: {len(operations)} operations, {ran} examples, {seconds:.0f} s")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:30])
    assert server.alive(), server.tail()
    assert "Traceback" not in server.log.read_text(errors="replace"), server.tail(80)
