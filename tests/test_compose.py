"""docker-compose.yml and the Dockerfile, checked without a Docker engine: structure, and that every command
they start is one the ``hft-search`` parser accepts (a renamed subcommand or flag breaks the deployment)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from hft_search.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROGRAM = "hft-search"
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::?[-?](?P<default>[^}]*))?\}")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]


def dockerfile_instruction(name: str) -> list[str]:
    """Arguments of every ``NAME ...`` line of the Dockerfile (one string each)."""
    pattern = re.compile(rf"^{name}\s+(.*)$", re.MULTILINE)
    return pattern.findall(DOCKERFILE.read_text(encoding="utf-8"))


def with_defaults(text: str) -> str:
    """Compose interpolation with no variables set: ``${NAME:-default}`` → default."""
    return _VARIABLE.sub(lambda match: match["default"] or "", text)


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(action.choices)


def argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: the service's entrypoint, else the image's, followed by its command."""
    (entrypoint,) = dockerfile_instruction("ENTRYPOINT")
    prefix = service.get("entrypoint", json.loads(entrypoint))
    return [*prefix, *service.get("command", [])]


def ours(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services that run the image built from the Dockerfile."""
    return {name: service for name, service in services.items() if "build" in service}


def test_services_exist(services: dict[str, Any]):
    assert {"postgres", "worker", "dashboard"} <= set(services)
    assert set(ours(services)) == {"worker", "dashboard"}


def test_postgres_keeps_its_data_and_reports_health(services: dict[str, Any]):
    postgres = services["postgres"]
    volumes = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["volumes"]
    named = {entry.split(":")[0] for entry in postgres["volumes"] if not entry.startswith((".", "/"))}

    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(entry.endswith(":/var/lib/postgresql/data") for entry in postgres["volumes"])
    assert named and named <= set(volumes)


def test_worker_requests_a_gpu(services: dict[str, Any]):
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]

    assert any("gpu" in device["capabilities"] for device in devices)


def test_worker_can_be_scaled(services: dict[str, Any]):
    """``--scale worker=N`` fails on a fixed container name or a fixed host port."""
    worker = services["worker"]

    assert "container_name" not in worker
    assert "ports" not in worker


@pytest.mark.parametrize("name", ["worker", "dashboard"])
def test_starts_after_postgres_is_healthy(services: dict[str, Any], name: str):
    assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["worker", "dashboard"])
def test_uses_the_postgres_service(services: dict[str, Any], name: str):
    storage = with_defaults(services[name]["environment"]["HFT_SEARCH_STORAGE"])
    postgres = services["postgres"]["environment"]
    user, password, database = (
        with_defaults(postgres[k]) for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")
    )

    assert storage == f"postgresql+psycopg://{user}:{password}@postgres:5432/{database}"


def test_every_hft_search_command_is_a_real_subcommand(services: dict[str, Any]):
    parser = build_parser()
    commands = {name: argv(service) for name, service in ours(services).items()}

    assert all(command[0] == PROGRAM for command in commands.values()), commands
    assert {name: command[1] for name, command in commands.items()} == {
        "worker": "worker",
        "dashboard": "dashboard",
    }
    assert {command[1] for command in commands.values()} <= subcommands(parser)


@pytest.mark.parametrize("name", ["worker", "dashboard"])
def test_command_parses(services: dict[str, Any], name: str):
    command = [with_defaults(part) for part in argv(services[name])]

    try:
        build_parser().parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"{name}: `{' '.join(command)}` is rejected by the hft-search parser (usage error above)")


def test_default_worker_spec_is_mounted(services: dict[str, Any]):
    worker = services["worker"]
    spec = Path(with_defaults(worker["command"][1]))
    mounts = dict(entry.split(":")[1::-1] for entry in worker["volumes"])

    assert (ROOT / mounts[str(spec.parent)] / spec.name).is_file()


def test_build_arguments_are_declared_in_the_dockerfile(services: dict[str, Any]):
    declared = {line.split("=")[0] for line in dockerfile_instruction("ARG")}

    for service in ours(services).values():
        assert set(service["build"]["args"]) <= declared


def test_dockerfile_installs_the_extras_on_python_311():
    (base,) = dockerfile_instruction("FROM")
    installs = " ".join(dockerfile_instruction("RUN"))

    assert base == "python:3.11-slim"
    assert "--index-url" in installs and "${TORCH_VARIANT}" in installs
    assert 'pip install ".[postgres,demo,dashboard,ray]"' in installs
