"""The Kafka-mode deployment: the compose file is valid for Compose itself and wired the way Patron reads it.

No Docker engine is needed: ``docker-compose config`` validates and interpolates the file offline, the
wiring (listeners, URLs, dependencies, healthchecks) is checked against Patron's own settings parser and
topic names, and the image's install step (``pip wheel .`` on the Docker build context) is run for real.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from patron.config import BrokerUrl
from patron.streams.log import DEAD_LETTER_TOPIC, EVENTS_TOPIC

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# One-shot services run to completion; every other service must report health.
ONE_SHOT = "service_completed_successfully"


def compose_command() -> list[str]:
    """``docker-compose`` (Debian package, works without an engine) or the ``docker compose`` plugin."""
    standalone = shutil.which("docker-compose")
    if standalone:
        return [standalone]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    pytest.fail("neither docker-compose nor the docker compose plugin is installed; run `make deploy-tools`")


def compose_config(env_file: Path | None = None) -> dict[str, Any]:
    """The compose file as Compose resolves it (validated, variables interpolated)."""
    variables = _compose_variables()
    env = {k: v for k, v in os.environ.items() if k not in variables}
    args = [*compose_command()]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    args += ["-f", str(COMPOSE_FILE), "config"]
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


def _compose_variables() -> set[str]:
    return set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service_by_image(compose: dict[str, Any], image_prefix: str) -> tuple[str, dict[str, Any]]:
    found = [
        (name, s) for name, s in compose["services"].items() if s.get("image", "").startswith(image_prefix)
    ]
    assert len(found) >= 1, f"no service runs an image starting with {image_prefix!r}"
    return found[0]


def listeners(value: str) -> dict[str, str]:
    """``NAME://host:port,...`` as {NAME: "host:port"}."""
    return dict(item.split("://", 1) for item in value.split(","))


def dependencies(service: dict[str, Any]) -> dict[str, str]:
    """depends_on in either form, as {service: condition}."""
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends.items()}


def published_ports(resolved: dict[str, Any], service: str) -> dict[int, int]:
    """{container port: host port} from resolved config (Compose v1 and v2 both print the long form)."""
    return {int(p["target"]): int(p["published"]) for p in resolved["services"][service].get("ports", [])}


def test_compose_config_accepts_the_file() -> None:
    resolved = compose_config()
    assert {"kafka", "schema-registry", "collector", "topics"} <= set(resolved["services"])
    assert {"kafka-data", "patron-data"} <= set(resolved["volumes"])


def test_every_dependency_exists_and_its_condition_can_be_met(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for needed, condition in dependencies(service).items():
            assert needed in services, f"{name} depends on {needed!r}, which is not a service"
            if condition == "service_healthy":
                assert "healthcheck" in services[needed], (
                    f"{name} waits for {needed} to be healthy; it has no check"
                )
            else:
                assert condition == ONE_SHOT, (
                    f"{name} waits for {needed} only to start; wait for health instead"
                )
                assert services[needed].get("restart", "no") == "no", f"one-shot {needed} must not restart"


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    one_shots = {n for s in compose["services"].values() for n, c in dependencies(s).items() if c == ONE_SHOT}
    for name, service in compose["services"].items():
        if name not in one_shots:
            check = service.get("healthcheck", {}).get("test")
            assert check and check[0] in {"CMD", "CMD-SHELL"}, f"{name} has no healthcheck"


def test_kafka_runs_kraft_with_an_internal_and_a_host_listener(compose: dict[str, Any]) -> None:
    name, kafka = service_by_image(compose, "apache/kafka")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    bound = listeners(env["KAFKA_LISTENERS"])
    internal = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert advertised[internal].split(":")[0] == name, "the internal listener must advertise the service name"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in bound
    protocols = {item.split(":")[0] for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")}
    assert protocols == set(bound)
    assert set(advertised) == set(bound) - {env["KAFKA_CONTROLLER_LISTENER_NAMES"]}


def test_collector_talks_to_the_kafka_internal_listener_and_the_registry(compose: dict[str, Any]) -> None:
    kafka_name, kafka = service_by_image(compose, "apache/kafka")
    registry_name, registry = service_by_image(compose, "confluentinc/cp-schema-registry")
    env = compose["services"]["collector"]["environment"]

    broker = BrokerUrl.parse(env["PATRON_BROKER"])
    internal = kafka["environment"]["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert broker.scheme == "kafka"
    assert broker.location == listeners(kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"])[internal]
    assert broker.location.split(":")[0] == kafka_name

    registry_port = registry["environment"]["SCHEMA_REGISTRY_LISTENERS"].rsplit(":", 1)[1]
    assert env["PATRON_REGISTRY"] == f"http://{registry_name}:{registry_port}"
    assert registry["environment"]["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].endswith(broker.location)


def test_collector_serves_on_its_published_port_and_keeps_data_in_a_named_volume(
    compose: dict[str, Any],
) -> None:
    collector = compose["services"]["collector"]
    assert collector["command"] == ["serve", "--host", "0.0.0.0", "--port", "8088"]
    assert collector["ports"] == ["${PATRON_COLLECTOR_PORT:-8088}:8088"]
    volume, mount = collector["volumes"][0].split(":")
    assert volume in compose["volumes"]
    assert mount == collector["environment"]["PATRON_DATA_DIR"]
    assert (
        COMPOSE_FILE.parent / collector["build"]["context"] / collector["build"]["dockerfile"]
    ).resolve() == DOCKERFILE


def test_topics_service_creates_patrons_topics_with_the_configured_partitions(
    compose: dict[str, Any],
) -> None:
    script = compose["services"]["topics"]["command"][0]
    assert f"for topic in {EVENTS_TOPIC} {DEAD_LETTER_TOPIC}; do" in script
    assert "--partitions ${PATRON_PARTITIONS:-4}" in script
    assert compose["services"]["collector"]["environment"]["PATRON_PARTITIONS"] == "${PATRON_PARTITIONS:-4}"


def test_env_example_documents_every_variable_and_compose_uses_them(tmp_path: Path) -> None:
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(example) == _compose_variables()

    changed = {
        "KAFKA_HOST_PORT": "39092",
        "KAFKA_HOST_NAME": "kafka.example.test",
        "SCHEMA_REGISTRY_HOST_PORT": "38081",
        "PATRON_COLLECTOR_PORT": "38088",
        "PATRON_PARTITIONS": "12",
    }
    assert set(changed) == set(example)
    env_file = tmp_path / "ports.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in changed.items()))
    resolved = compose_config(env_file)

    kafka_env = resolved["services"]["kafka"]["environment"]
    assert "EXTERNAL://kafka.example.test:39092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert published_ports(resolved, "kafka") == {39092: 39092}
    assert published_ports(resolved, "schema-registry") == {8081: 38081}
    assert published_ports(resolved, "collector") == {8088: 38088}
    assert "--partitions 12 " in resolved["services"]["topics"]["command"][0]
    assert str(resolved["services"]["collector"]["environment"]["PATRON_PARTITIONS"]) == "12"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_installs_patron_and_runs_it_unprivileged() -> None:
    steps = dockerfile_instructions()
    stages = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    final = steps[stages[-1] :]
    assert final[0][1].split()[0] == "python:3.11-slim"
    entrypoint = [json.loads(args) for op, args in final if op == "ENTRYPOINT"]
    assert entrypoint == [["patron"]]
    runs = " ".join(args for op, args in final if op == "RUN")
    assert "pip install" in runs and " -e " not in runs
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1] not in {"root", "0"}
    user_at = max(i for i, (op, _) in enumerate(final) if op == "USER")
    assert all(op != "RUN" for op, _ in final[user_at:]), "nothing may run as root after USER"
    scripts = _pyproject()["project"]["scripts"]
    assert scripts["patron"] == "patron.cli.main:run"


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule for the patterns this repo uses: a match on a path or any parent folder."""
    parts = relative.split("/")
    for end in range(1, len(parts) + 1):
        for pattern in patterns:
            if pattern.startswith("**/"):
                if any(fnmatch.fnmatch("/".join(parts[start:end]), pattern[3:]) for start in range(end)):
                    return True
            elif fnmatch.fnmatch("/".join(parts[:end]), pattern):
                return True
    return False


def docker_context(target: Path) -> Path:
    """Copy the repository into ``target`` as ``docker build`` would send it, .dockerignore applied."""
    patterns = [
        p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), (
        "exception patterns need a fuller matcher in this test"
    )
    for directory, folders, files in os.walk(ROOT):
        here = Path(directory).relative_to(ROOT)
        folders[:] = [f for f in folders if not _ignored((here / f).as_posix(), patterns)]
        for name in files:
            if not _ignored((here / name).as_posix(), patterns):
                (target / here).mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / here / name, target / here / name)
    return target


def test_image_build_step_produces_the_patron_command_from_the_build_context(tmp_path: Path) -> None:
    context = docker_context(tmp_path / "context")
    assert not (context / ".venv").exists() and not (context / ".git").exists()
    wheels = tmp_path / "wheels"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(wheels),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"pip wheel on the Docker build context failed:\n{done.stderr}"
    (wheel,) = wheels.glob("patron-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert re.search(r"^patron = patron\.cli\.main:run$", entry_points, re.M)
    for package in _pyproject()["tool"]["setuptools"]["packages"]:
        assert f"{package.replace('.', '/')}/__init__.py" in names, f"{package} is missing from the image"
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("patron/schemas/avro/")}
    assert shipped == {p.name for p in (ROOT / "schemas" / "avro").glob("*.avsc")}
