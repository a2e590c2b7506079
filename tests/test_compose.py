"""The docker-compose stack, checked by structure: no Docker engine runs here, and the same
processes (migrate, serve, worker) are started natively by the integration tests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
APP_SERVICES = ("migrate", "web", "worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def gpu_override() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())


def test_the_stack_has_its_five_services_each_built_or_pulled(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker"}
    for name, service in services.items():
        assert "image" in service or "build" in service, name


def test_app_services_run_real_cqaface_subcommands(compose):
    from identify.cli.main import build_parser

    parser = build_parser()
    for name in APP_SERVICES:
        command = compose["services"][name]["command"]
        args = parser.parse_args(command)  # exits (SystemExit) on an unknown subcommand
        assert callable(args.handler), name


def test_web_and_workers_start_after_healthy_stores_and_a_finished_migration(compose):
    for name in ("web", "worker"):
        depends = compose["services"][name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
    for store in ("postgres", "redis"):
        assert compose["services"][store]["healthcheck"]["test"]


def test_app_services_share_one_configuration_pointing_at_the_stores(compose):
    for name in APP_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["CQAFACE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in env["CQAFACE_DATABASE_URL"]
        assert env["CQAFACE_BROKER_URL"].startswith("redis://redis:6379")


def test_no_secret_has_a_default(compose):
    text = (ROOT / "docker-compose.yml").read_text()
    for variable in ("POSTGRES_PASSWORD", "CQAFACE_SECRET_KEY"):
        uses = re.findall(r"\$\{" + variable + r"([^}]*)\}", text)
        assert uses, variable
        assert all(use.startswith(":?") for use in uses), f"{variable} must be required"
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${")


def test_workers_scale_and_share_uploads_and_indexes_with_the_web_app(compose):
    worker, web = compose["services"]["worker"], compose["services"]["web"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N
    data_mount = "data:/data"
    assert data_mount in worker["volumes"] and data_mount in web["volumes"]
    assert worker["environment"]["CQAFACE_DATA_DIR"] == "/data"
    assert {"pgdata", "redisdata", "data"} <= set(compose["volumes"])


def test_the_broker_keeps_queued_tasks_across_a_restart(compose):
    assert "--appendonly" in compose["services"]["redis"]["command"]


def test_every_variable_the_stack_sets_is_documented(compose):
    readme = (ROOT / "README.md").read_text()
    variables = {
        key
        for name in APP_SERVICES
        for key in compose["services"][name]["environment"]
        if key.startswith("CQAFACE_")
    }
    missing = sorted(v for v in variables if f"`{v}`" not in readme)
    assert not missing, f"not in README's configuration table: {missing}"


def test_gpu_variant_builds_the_cuda_image_and_reserves_a_gpu(gpu_override):
    worker = gpu_override["services"]["worker"]
    assert worker["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert (ROOT / worker["build"]["dockerfile"]).is_file()
    device = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert worker["environment"]["CQAFACE_DEVICE"] == "cuda"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "docker/Dockerfile.gpu"])
def test_images_pin_torch_before_the_project_and_skip_facenets_pins(dockerfile):
    text = (ROOT / dockerfile).read_text()
    torch_at = text.index("pip install torch==2.13.0")
    project_at = text.index("pip install .")
    assert torch_at < project_at
    assert "--no-deps facenet-pytorch==2.6.0" in text
    assert "USER cqaface" in text  # not root
