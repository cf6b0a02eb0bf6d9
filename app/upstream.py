"""HTTP to the upstreams: one pooled session per process, explicit timeouts, TLS verified, no retries.

A send is never retried here: once a request may have been written, repeating it could send an SMS
twice. Transport failures become the bridge's own errors, split by whether anything can have reached
the upstream (`BackendUnreachable`: nothing did) or not (`BackendTimeout`, `BackendConnectionLost`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from app.config import Settings
from app.errors import (
    BackendConnectionLost,
    BackendConnectTimeout,
    BackendDnsFailure,
    BackendTimeout,
    BackendTlsFailure,
    BackendUnreachable,
)
from app.request_log import note_upstream

log = logging.getLogger(__name__)


class UpstreamHttp:
    """Make HTTP calls to one upstream on behalf of a backend named `backend`."""

    def __init__(self, settings: Settings, backend: str) -> None:
        self.backend = backend
        self.timeout = (settings.connect_timeout, settings.read_timeout)
        self.verify: bool | str = settings.upstream_ca_bundle or True
        self._pool_size = settings.upstream_pool_size
        self._session: requests.Session | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Send one request and return its response whatever its status; raise on transport failure."""
        started = time.perf_counter()
        status = None
        try:
            response = self.session.request(
                method, url, timeout=self.timeout, verify=self.verify, allow_redirects=False, **kwargs
            )
            status = response.status_code
            return response
        except requests.exceptions.SSLError as exc:
            raise BackendTlsFailure(
                f"the {self.backend} backend failed the TLS handshake; nothing was sent"
            ) from exc
        except requests.exceptions.ConnectTimeout as exc:
            raise BackendConnectTimeout(
                f"the {self.backend} backend did not accept a connection within "
                f"{self.timeout[0]:g} s; nothing was sent"
            ) from exc
        except requests.exceptions.ReadTimeout as exc:
            raise BackendTimeout(
                f"the {self.backend} backend did not answer within {self.timeout[1]:g} s; "
                "the message may have been sent: check before sending it again"
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            reason = _reason(exc)
            if isinstance(reason, NameResolutionError):
                raise BackendDnsFailure(
                    f"the {self.backend} backend's host name could not be resolved; nothing was sent"
                ) from exc
            # urllib3's NewConnectionError (refused) is a ConnectTimeoutError too: test it first.
            if isinstance(reason, NewConnectionError):
                raise BackendUnreachable(
                    f"the {self.backend} backend refused the connection; nothing was sent"
                ) from exc
            if isinstance(reason, ConnectTimeoutError):
                raise BackendConnectTimeout(
                    f"the {self.backend} backend did not accept a connection within "
                    f"{self.timeout[0]:g} s; nothing was sent"
                ) from exc
            raise BackendConnectionLost(
                f"the connection to the {self.backend} backend broke before it answered; "
                "the message may have been sent: check before sending it again"
            ) from exc
        except requests.exceptions.RequestException as exc:
            # A body cut short (ChunkedEncodingError), a bad encoding...: the request was sent.
            raise BackendConnectionLost(
                f"the {self.backend} backend's answer broke off; "
                "the message may have been sent: check before sending it again"
            ) from exc
        finally:
            note_upstream(self.backend, status, time.perf_counter() - started)

    @property
    def session(self) -> requests.Session:
        """Return this process's session, made on first use so that forked workers never share one."""
        pid = os.getpid()
        if self._session is None or self._pid != pid:
            with self._lock:
                if self._session is None or self._pid != pid:
                    self._session = self._new_session()
                    self._pid = pid
        return self._session

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        # Proxies and .netrc from the environment would change where SMS go without a word in the
        # bridge's own configuration.
        session.trust_env = False
        adapter = HTTPAdapter(
            pool_connections=1, pool_maxsize=self._pool_size, max_retries=0, pool_block=False
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = "smsbridge"
        return session


def _reason(exc: requests.exceptions.ConnectionError) -> object:
    """Return urllib3's underlying reason for a connection error, if there is one."""
    inner = exc.args[0] if exc.args else None
    return getattr(inner, "reason", inner)
