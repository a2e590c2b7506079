"""A real stack for end-to-end tests: `cqaface serve` and `cqaface worker` as processes on
loopback, with PostgreSQL and Redis, and a small HTTP client (urllib, multipart by hand)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CQAFACE = [sys.executable, "-m", "identify.cli"]
REDIS_URL = os.environ.get("CQAFACE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_redis() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as error:
        pytest.skip(f"no Redis at {REDIS_URL}: {error}")


def stack_env(database_url: str, tmp: Path, *, broker: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CQAFACE_")}
    env.update(
        CQAFACE_DATABASE_URL=database_url,
        CQAFACE_DATA_DIR=str(tmp / "data"),
        CQAFACE_INDEX_DIR=str(tmp / "index"),
        CQAFACE_SECRET_KEY=uuid.uuid4().hex,
        CQAFACE_QUEUE=f"cqaface-test-{uuid.uuid4().hex[:8]}",
        CQAFACE_WORKER_CONCURRENCY="1",
        CQAFACE_RATE_LIMIT="0",
        OMP_NUM_THREADS="1",
    )
    if "CQAFACE_SHARED_DATA" in os.environ:
        env["CQAFACE_SHARED_DATA"] = os.environ["CQAFACE_SHARED_DATA"]
    if broker:
        env["CQAFACE_BROKER_URL"] = REDIS_URL
    return env


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [*CQAFACE, *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class Process:
    """A child process with its output in a log file, stopped by its own pid."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.popen.pid, 15)  # its own session: the server and its workers only
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, 9)
                self.popen.wait(10)
        self._out.close()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_server(env: dict[str, str], tmp: Path) -> tuple[Process, str]:
    port = free_port()
    server = Process(
        [*CQAFACE, "serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp / "server.log"
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if not server.alive():
            pytest.fail(f"cqaface serve exited:\n{server.tail()}")
        try:
            status, body = request("GET", f"{base}/api/v1/health")
            if status == 200 and body["index"]["loaded"]:
                return server, base
        except OSError:
            pass
        time.sleep(0.5)
    server.stop()
    pytest.fail(f"cqaface serve did not come up:\n{server.tail()}")


def request(
    method: str,
    url: str,
    *,
    key: str | None = None,
    json_body: dict | None = None,
    files: dict[str, tuple[str, bytes]] | None = None,
    fields: dict[str, str] | None = None,
) -> tuple[int, dict | str]:
    headers = {}
    data = None
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    elif files or fields:
        boundary = uuid.uuid4().hex
        parts = []
        for name, value in (fields or {}).items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
        for name, (filename, content) in (files or {}).items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
                + content
                + b"\r\n"
            )
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            status, raw, kind = (
                response.status,
                response.read(),
                response.headers.get_content_type(),
            )
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read(), error.headers.get_content_type()
    if kind == "application/json":
        return status, json.loads(raw)
    return status, raw.decode(errors="replace")
