"""The backend interface: one registry of names, capabilities each backend declares, refusals by default."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from app.backends import BACKEND_NAMES, Backend, backend_class, webhook_source_names
from app.config import ConfigError, Settings
from app.errors import UnsupportedByBackend
from app.vocabulary import Credential, CredentialSource, HttpCall
from tests.harness.gunicorn import ROOT


def test_each_registered_backend_is_a_backend_of_the_name_it_is_registered_under() -> None:
    for name in BACKEND_NAMES:
        found = backend_class(name)
        assert issubclass(found, Backend)
        assert found.name == name


def test_the_settings_take_exactly_the_registrys_names(tmp_path: Path) -> None:
    for name in BACKEND_NAMES:
        settings = Settings.from_env({}, {"backend": name, "data_dir": tmp_path}, parse_urls=False)
        assert settings.backend == name
    listed = ", ".join(BACKEND_NAMES)
    with pytest.raises(ConfigError, match=f"SMSBRIDGE_BACKEND='twilio': expected one of {listed}$"):
        Settings.from_env({}, {"backend": "twilio", "data_dir": tmp_path}, parse_urls=False)
    with pytest.raises(ConfigError, match=f"expected another of {listed} than SMSBRIDGE_BACKEND"):
        Settings.from_env(
            {}, {"backend": "sandbox", "failover_backend": "twilio", "data_dir": tmp_path}, parse_urls=False
        )


def test_a_backend_refuses_what_it_does_not_declare_naming_itself_and_the_call(
    make_app: Callable[..., Flask],
) -> None:
    state = make_app("sandbox").extensions["smsbridge"]
    credential = Credential("a-key-0001", CredentialSource.QUERY)
    call = HttpCall(method="GET", path="/getsms/", query=(), form=())
    refused = []
    for name in BACKEND_NAMES:
        backend = state.backend_for(name)
        if not backend.passes_through:
            with pytest.raises(UnsupportedByBackend, match=f"the {name} backend does not support passing"):
                backend.forward(call, credential)
            refused.append((name, "forward"))
        if not backend.simulates:
            with pytest.raises(UnsupportedByBackend, match=f"the {name} backend does not support simulating"):
                backend.simulate_inbound(credential, "+15550100", "hi")
            with pytest.raises(UnsupportedByBackend, match=f"the {name} backend does not support simulating"):
                backend.simulate_failure(credential, "some-guid", "failed")
            with pytest.raises(UnsupportedByBackend, match=f"the {name} backend does not support connecting"):
                backend.add_device(credential, "phone-2")
            refused.append((name, "simulate"))
        if not backend.receives_webhooks:
            with pytest.raises(UnsupportedByBackend, match=f"the {name} backend does not receive webhooks"):
                backend.webhook_event({"event": "incoming"}, {})
            refused.append((name, "webhooks"))
    # Each capability is refused by at least one of today's backends: the defaults are exercised.
    assert {what for _, what in refused} == {"forward", "simulate", "webhooks"}
    with pytest.raises(UnsupportedByBackend, match="the sandbox backend does not support registering"):
        state.backend_for("sandbox").register_webhooks(credential, "https://bridge.example.test/webhooks/x")


def test_webhook_sources_are_the_backends_that_receive_webhooks(make_app: Callable[..., Flask]) -> None:
    assert webhook_source_names() == tuple(
        sorted(name for name in BACKEND_NAMES if backend_class(name).receives_webhooks)
    )
    assert set(webhook_source_names()) == {"mobsms", "smsmobileapi"}
    app = make_app("sandbox")
    state = app.extensions["smsbridge"]
    client = app.test_client()
    # A tag signed right, for a backend whose upstream posts nothing: no such source.
    refused = client.post(
        f"/webhooks/sandbox/default?key={state.tokens.label('sandbox:default')}", json={"event": "incoming"}
    )
    assert refused.status_code == 403
    assert refused.get_json()["result"]["error_code"] == "key_refused"
    # mobsms's source is there whatever the bridge's own backend (a managed client may use mobsms).
    taken = client.post(
        f"/webhooks/mobsms/default?key={state.tokens.label('mobsms:default')}",
        json={"event": "incoming", "data": {"message_id": "m-1", "sender_number": "+15550100"}},
    )
    assert taken.status_code == 200
    assert taken.get_json() == {"success": True, "stored": False, "id": None}


def test_the_settings_read_the_registry_without_importing_a_backend_that_needs_http() -> None:
    # The package imports the sandbox's module (gunicorn's master prepares its database), no other.
    probe = (
        "import sys, app.config\n"
        "print(sorted(m for m in sys.modules if m.startswith('app.backends.')), 'urllib3' in sys.modules)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert shown == "['app.backends.base', 'app.backends.sandbox'] False"
