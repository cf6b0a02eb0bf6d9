"""The bridge served from a thread of the test process, and what every test sends it."""

from __future__ import annotations

import threading
from collections.abc import Callable

from flask import Flask
from werkzeug.serving import make_server

from app.backends import BACKEND_NAMES as BACKENDS

__all__ = ["BACKENDS", "GOOD_KEY", "UNICODE_TEXT", "LiveBridge"]

#: a key each backend accepts, as a client of that backend would hold it
GOOD_KEY = {"sandbox": "sandbox-key-1", "smsmobileapi": "vendor-key-1", "mobsms": "mobsms-key-1"}

#: the message every interop test sends: Cyrillic, the euro sign, Latin-1, CJK and an emoji
UNICODE_TEXT = "Здравей € ñ 你好 😀"


class LiveBridge:
    """A bridge served over real HTTP on 127.0.0.1 from a thread of the test process."""

    def __init__(self, build: Callable[[str], Flask]) -> None:
        # Bind first, so that the app can be built advertising the URL it is really served at.
        self.server = make_server("127.0.0.1", 0, Flask("placeholder"), threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.app = build(self.url)
        self.server.app = self.app
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def wsdl_url(self) -> str:
        return self.url + "/sendsms/wsdl/sendsms.wsdl"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
