"""The vendor's Postman collection, run by newman against a server on 127.0.0.1, never the vendor's host.

    run = run_collection("http://127.0.0.1:8080", api_key=GOOD_KEY)
    assert [r.name for r in run.failed] == []

newman comes from the npm registry: `scripts/setup --test` installs it into tests/.node/ (npm install
--prefix); a newman on PATH is used otherwise. The collection and its environment are the vendor's files
(tests/specs/smsmobileapi-postman/, else ../shared/specs/smsmobileapi-postman/).

The collection's own variable and its environment both point `baseUrl` at the vendor's API host;
the run overrides it (with `--env-var`, which wins over both) and `apiKey`. Before newman starts, every
request's URL is resolved with the variables the run will have and must be http://127.0.0.1:...; while it
runs, newman's proxy is a closed port of 127.0.0.1 for every other host (NO_PROXY=127.0.0.1), and
redirects are not followed; after it, every request it reports must have gone to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.harness.net import closed_port_url

ROOT = Path(__file__).resolve().parents[2]
#: where scripts/setup --test installs newman
NEWMAN = ROOT / "tests" / ".node" / "node_modules" / ".bin" / "newman"
#: the vendor's collection: the copy in the repository, else the shared specs beside it
POSTMAN_DIRS = (
    ROOT / "tests" / "specs" / "smsmobileapi-postman",
    ROOT.parent / "shared" / "specs" / "smsmobileapi-postman",
)
COLLECTION_NAME = "SMSMobileAPI.postman_collection.json"
ENVIRONMENT_NAME = "SMSMobileAPI.postman_environment.json"
#: the variables that say where requests go, and with which key
BASE_URL_VARIABLE = "baseUrl"
API_KEY_VARIABLE = "apiKey"
#: the only host a run may reach
LOCAL_HOST = "127.0.0.1"

_VARIABLE = re.compile(r"\{\{([^{}]+)\}\}")


def newman_executable() -> str:
    """Return the newman to run: tests/.node's, else one on PATH."""
    if NEWMAN.exists():
        return str(NEWMAN)
    found = shutil.which("newman")
    assert found, "newman is missing: run scripts/setup --test (npm install --prefix tests/.node newman)"
    return found


def postman_files() -> tuple[Path, Path]:
    """Return the vendor's collection and environment files."""
    for directory in POSTMAN_DIRS:
        if (directory / COLLECTION_NAME).exists():
            return directory / COLLECTION_NAME, directory / ENVIRONMENT_NAME
    raise AssertionError(f"the vendor's Postman collection is in none of {[str(d) for d in POSTMAN_DIRS]}")


@dataclass(frozen=True)
class RequestResult:
    """One request of the run as newman reports it."""

    name: str
    method: str
    url: str
    #: the HTTP status, or None when no answer came (then `error` says why)
    status: int | None
    #: the collection's assertions that failed, as "name: message"
    failures: tuple[str, ...]
    #: why the request got no answer (connection refused, timeout ...), if it did not
    error: str | None = None

    @property
    def host(self) -> str | None:
        return urlsplit(self.url).hostname

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures


@dataclass(frozen=True)
class NewmanRun:
    """A whole run: the requests in the collection's order, and newman's own report for anything else."""

    requests: tuple[RequestResult, ...]
    report: dict[str, Any]

    @property
    def failed(self) -> list[RequestResult]:
        return [request for request in self.requests if not request.passed]


def _variables(values: list[dict[str, Any]]) -> dict[str, str]:
    return {
        v["key"]: str(v.get("value", "")) for v in values if v.get("enabled", True) and not v.get("disabled")
    }


def _raw_url(url: str | dict[str, Any]) -> str:
    return url if isinstance(url, str) else str(url["raw"])


def _requests_of(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the collection's requests (folders walked in order), each its item."""
    found: list[dict[str, Any]] = []
    for item in items:
        if "item" in item:
            found.extend(_requests_of(item["item"]))
        else:
            found.append(item)
    return found


def resolved_urls(collection: dict[str, Any], variables: dict[str, str]) -> dict[str, str]:
    """Return each request's URL (by name) with {{variables}} replaced as newman will before it sends."""
    urls = {}
    for item in _requests_of(collection["item"]):
        url = _raw_url(item["request"]["url"])
        for _ in range(10):  # a variable's value may hold variables
            url = _VARIABLE.sub(lambda m: variables.get(m.group(1).strip(), m.group(0)), url)
        urls[item["name"]] = url
    return urls


def check_local(urls: dict[str, str]) -> None:
    """Fail unless every URL is plain http to 127.0.0.1 with nothing left unresolved."""
    for name, url in urls.items():
        parts = urlsplit(url)
        assert "{{" not in url, f"{name}: unresolved variable in {url}"
        assert parts.scheme == "http" and parts.hostname == LOCAL_HOST, (
            f"{name}: {url} is not on {LOCAL_HOST}"
        )


def _url_of(request: dict[str, Any]) -> str:
    """The URL newman sent to, from the JSON reporter's URL object (host and path split in parts)."""
    url = request["url"]
    if isinstance(url, str):
        return url
    host = ".".join(url.get("host") or [])
    netloc = f"{host}:{url['port']}" if url.get("port") else host
    path = "/" + "/".join(url.get("path") or [])
    query = "&".join(
        str(q["key"]) if q.get("value") is None else f"{q['key']}={q['value']}"
        for q in url.get("query") or []
        if not q.get("disabled")
    )
    return urlunsplit((url.get("protocol") or "http", netloc, path, query, ""))


def _result_of(execution: dict[str, Any]) -> RequestResult:
    request = execution.get("request") or execution["item"]["request"]
    response = execution.get("response") or {}
    failures = tuple(
        f"{a['assertion']}: {a['error'].get('message', '')}"
        for a in execution.get("assertions") or []
        if a.get("error")
    )
    error = execution.get("requestError")
    return RequestResult(
        name=execution["item"]["name"],
        method=request.get("method", "GET"),
        url=_url_of(request),
        status=response.get("code"),
        failures=failures,
        error=(error.get("message") or error.get("code") or json.dumps(error)) if error else None,
    )


def run_collection(
    base_url: str,
    *,
    api_key: str = "sandbox-key",
    variables: dict[str, str] | None = None,
    timeout_seconds: float = 120,
) -> NewmanRun:
    """Run the vendor's collection against `base_url` (http://127.0.0.1:PORT) and return what happened.

    `variables` overrides more of the environment's variables (deviceSid, mailboxKey, recipient ...).
    """
    collection_path, environment_path = postman_files()
    collection = json.loads(collection_path.read_text())
    environment = json.loads(environment_path.read_text())
    overrides = {BASE_URL_VARIABLE: base_url.rstrip("/"), API_KEY_VARIABLE: api_key, **(variables or {})}
    # newman's precedence, lowest first: the collection's variables, the environment, --env-var
    scope = {**_variables(collection.get("variable", [])), **_variables(environment["values"]), **overrides}
    check_local(resolved_urls(collection, scope))

    nowhere = closed_port_url()
    env = {
        **os.environ,
        "HTTP_PROXY": nowhere,
        "HTTPS_PROXY": nowhere,
        "http_proxy": nowhere,
        "https_proxy": nowhere,
        "NO_PROXY": LOCAL_HOST,
        "no_proxy": LOCAL_HOST,
    }
    with tempfile.TemporaryDirectory(prefix="newman-") as directory:
        report_path = Path(directory) / "report.json"
        command = [
            newman_executable(),
            "run",
            str(collection_path),
            "--environment",
            str(environment_path),
            *[arg for key, value in overrides.items() for arg in ("--env-var", f"{key}={value}")],
            "--reporters",
            "json",
            "--reporter-json-export",
            str(report_path),
            "--ignore-redirects",
            "--timeout-request",
            "15000",
            "--suppress-exit-code",
            "--color",
            "off",
        ]
        finished = subprocess.run(
            command,
            env=env,
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
        assert finished.returncode == 0 and report_path.exists(), (
            f"newman failed ({finished.returncode}):\n{finished.stdout}\n{finished.stderr}"
        )
        report = json.loads(report_path.read_text())
    requests = tuple(_result_of(execution) for execution in report["run"]["executions"])
    check_local({request.name: request.url for request in requests})
    return NewmanRun(requests=requests, report=report)
