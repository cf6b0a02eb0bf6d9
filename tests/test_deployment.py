"""The reference deployment (deploy/compose.yaml, deploy/nginx.conf) agrees with the bridge and with
docs/deployment.md: its services are the ones the docs name, the bridges' environment is a configuration the
bridge accepts and the same on both, nginx sends to both and tells them the client's address.

No container engine runs here: the compose file is read as YAML (PyYAML, which schemathesis brings), and
nginx's file line by line for the few directives that matter.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.config import OTHER_VARIABLES, Settings, env_name

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
NGINX = DEPLOY / "nginx.conf"
ENV_EXAMPLE = DEPLOY / "env.example"
DOC = ROOT / "docs" / "deployment.md"

BRIDGES = ("bridge-a", "bridge-b")
SERVICES = {*BRIDGES, "postgres", "redis", "nginx"}
#: the names of a compose interpolation, `${NAME}`, `${NAME:?message}`, `${NAME:-default}`
INTERPOLATED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, written as a mapping or as a list of NAME=VALUE (compose takes both)."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(name): str(value) for name, value in raw.items()}


def interpolated(node: object) -> set[str]:
    """The variables the compose file's values (not its comments) take from deploy/.env."""
    if isinstance(node, dict):
        return set().union(*(interpolated(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(interpolated(value) for value in node))
    return set(INTERPOLATED.findall(node)) if isinstance(node, str) else set()


def known_variables() -> set[str]:
    return {env_name(f.name) for f in dataclasses.fields(Settings)} | OTHER_VARIABLES


def nginx_directives(name: str) -> list[str]:
    """The arguments of every `name ...;` line of deploy/nginx.conf, comments left out."""
    found = []
    for line in NGINX.read_text().splitlines():
        words = line.split("#", 1)[0].strip().rstrip(";").split()
        if words and words[0] == name:
            found.append(" ".join(words[1:]))
    return found


def test_the_services_the_docs_name_are_in_the_compose_file(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == SERVICES
    text = DOC.read_text()
    assert sorted(name for name in SERVICES if f"`{name}`" not in text) == []


def test_every_smsbridge_variable_in_the_compose_file_is_a_setting(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    named = set(re.findall(r"SMSBRIDGE_[A-Z][A-Z0-9_]*", text))
    assert named, "the bridges are configured through SMSBRIDGE_* variables"
    assert sorted(named - known_variables()) == []
    # ... and the docs explain each of them.
    documented = set(re.findall(r"SMSBRIDGE_[A-Z][A-Z0-9_]*", DOC.read_text()))
    assert sorted(named - documented) == []


def test_both_bridges_get_the_same_settings(compose: dict[str, Any]) -> None:
    a, b = (services(compose)[name] for name in BRIDGES)
    assert environment(a) == environment(b)
    assert a["build"] == b["build"] and a.get("image") == b.get("image")
    assert (DEPLOY / a["build"]["context"] / a["build"]["dockerfile"]).resolve() == ROOT / "Dockerfile"
    # Each keeps its own data directory (the image's /data): nothing in it is shared.
    data = [[v for v in s["volumes"] if v.split(":")[1] == "/data"] for s in (a, b)]
    assert len(data[0]) == len(data[1]) == 1 and data[0] != data[1]


def test_the_bridges_share_postgresql_redis_and_a_secret_from_the_env_file(compose: dict[str, Any]) -> None:
    env = environment(services(compose)["bridge-a"])
    state = urlsplit(env[env_name("state_url")])
    counts = urlsplit(env[env_name("ratelimit_storage")])
    assert (state.scheme, state.hostname, state.password) == ("postgresql", "postgres", None)
    assert (counts.scheme, counts.hostname) == ("redis", "redis")
    assert env[env_name("trusted_proxies")] == "1"
    # Secrets come from deploy/.env, never from the file itself; env.example lists every one asked for.
    asked = interpolated(compose)
    assert env_name("token_secret") in asked
    assert set(INTERPOLATED.findall(env[env_name("token_secret")])) == {env_name("token_secret")}
    example = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert asked == example
    # The bridges wait for PostgreSQL's health check, and the clients file is mounted read-only.
    bridge = services(compose)["bridge-a"]
    assert bridge["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert "test" in services(compose)["postgres"]["healthcheck"]
    clients_mount = env[env_name("clients_file")].rsplit("/", 1)[0]
    assert any(v.endswith(f":{clients_mount}:ro") for v in bridge["volumes"])


def test_the_bridges_environment_is_a_configuration_the_bridge_accepts(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """Settings.from_env, as a worker reads it, with deploy/.env's values filled in and a clients file."""
    clients = tmp_path / "clients.toml"
    clients.write_text("")
    values = {name: secrets.token_urlsafe(32) for name in interpolated(compose)}
    environ = {}
    for name, value in environment(services(compose)["bridge-a"]).items():
        referenced = INTERPOLATED.findall(value)
        environ[name] = values[referenced[0]] if referenced else value
    environ[env_name("clients_file")] = str(clients)
    settings = Settings.from_env(environ)
    assert settings.state_url.startswith("postgresql://")
    assert settings.token_secret is not None and settings.trusted_proxies == 1


def test_nginx_sends_to_both_bridges_and_passes_the_client_address(compose: dict[str, Any]) -> None:
    [exposed] = [
        line.split()[1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("EXPOSE")
    ]
    servers = [args.split()[0] for args in nginx_directives("server") if ":" in args.split()[0]]
    assert servers == [f"{name}:{exposed}" for name in BRIDGES]
    headers = dict(args.split(None, 1) for args in nginx_directives("proxy_set_header"))
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    # A request one bridge may have received is never passed on to the other: that would send twice.
    assert nginx_directives("proxy_next_upstream") == ["off"]
    [proxied] = nginx_directives("proxy_pass")
    assert proxied == "http://" + nginx_directives("upstream")[0].split()[0]
    nginx = services(compose)["nginx"]
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    assert set(nginx["depends_on"]) == set(BRIDGES)
