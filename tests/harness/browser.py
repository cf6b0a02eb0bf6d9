"""A real headless Chromium (Debian's `chromium`, driven by Playwright's sync API) reaching 127.0.0.1 only.

    with Browser() as browser:
        page = browser.new_page()
        page.goto(bridge.url)
        page.get_by_role("button", name="Reply").click()
        screenshot(page, "inbox-after-reply")      # kept under tests/.artifacts/screenshots/
        assert browser.blocked == []               # nothing tried to leave 127.0.0.1

No browser is downloaded: Playwright (the Python package) launches /usr/bin/chromium, which
`scripts/setup --test` installs from apt (never `playwright install`). Playwright starts Chromium with a
fresh user-data-dir of its own, removed on close.

Nothing leaves 127.0.0.1, on three levels: every page's requests and WebSockets to another host are
aborted (and recorded in `Browser.blocked`), service workers are blocked (their requests would not pass
through the guard), and Chromium's resolver maps every other name to nothing. Chromium's own background
traffic (updates, sync, QUIC probes) is off by its flags.

Screenshots go to $SMSBRIDGE_TEST_ARTIFACTS/screenshots/ (default tests/.artifacts/screenshots/);
`screenshots_taken()` lists those of this run, for tests/conftest.py to print at the end.

The sync API runs Playwright's asyncio loop in a greenlet of the calling thread, not in another thread:
a test must not already run an asyncio loop, and it works beside gevent installed but not monkey-patched.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Browser as PlaywrightBrowser
from playwright.sync_api import BrowserContext, Page, Playwright, Route, WebSocketRoute, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
#: where the test run keeps what it produces (screenshots/ below it)
ARTIFACTS = Path(os.environ.get("SMSBRIDGE_TEST_ARTIFACTS") or ROOT / "tests" / ".artifacts")
SCREENSHOTS = ARTIFACTS / "screenshots"
#: Debian's chromium package; its chromium-driver (for Selenium) is /usr/bin/chromedriver
CHROMIUM = "/usr/bin/chromium"
#: the only host pages may reach
ALLOWED_HOSTS = frozenset({"127.0.0.1"})
#: flags that keep Chromium quiet on a machine without a network (Playwright adds --headless and the
#: user-data-dir itself); the resolver rule makes any name but 127.0.0.1 unresolvable
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)

_taken: list[Path] = []


def screenshots_taken() -> list[Path]:
    """Return the paths of the screenshots this test run took, in order."""
    return list(_taken)


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG of `page` as SCREENSHOTS/<name>.png (a -2, -3 ... suffix if taken already), record it."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "screenshot"
    path = SCREENSHOTS / f"{stem}.png"
    number = 1
    while path in _taken:
        number += 1
        path = SCREENSHOTS / f"{stem}-{number}.png"
    page.screenshot(path=str(path), full_page=full_page)
    _taken.append(path)
    return path


def is_allowed(url: str, hosts: frozenset[str] = ALLOWED_HOSTS) -> bool:
    """Whether the browser may fetch `url`: data:, blob:, about: and the like, or a host in `hosts`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss", "ftp"):
        return True
    return parts.hostname in hosts


class Browser:
    """Headless Chromium with Playwright; each `new_page()` is in a context of its own, guarded.

    `blocked` lists the URLs the guard refused, in order, across all pages.
    """

    def __init__(self, *, allowed_hosts: frozenset[str] = ALLOWED_HOSTS, timeout_ms: float = 15_000) -> None:
        assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: run scripts/setup --test"
        self.allowed_hosts = allowed_hosts
        self.timeout_ms = timeout_ms
        self.blocked: list[str] = []
        self._playwright: Playwright | None = None
        self._browser: PlaywrightBrowser | None = None
        self._contexts: list[BrowserContext] = []

    def start(self) -> Browser:
        assert self._playwright is None, "already started"
        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_FLAGS)
            )
        except BaseException:
            self._playwright.stop()
            self._playwright = None
            raise
        return self

    def new_context(self, **options: Any) -> BrowserContext:
        """A fresh context (cookies, storage) with the guard; `options` go to Playwright's new_context."""
        assert self._browser is not None, "start the browser first"
        context = self._browser.new_context(service_workers="block", **options)
        context.set_default_timeout(self.timeout_ms)
        context.route("**/*", self._guard)
        context.route_web_socket(re.compile(".*"), self._guard_web_socket)
        self._contexts.append(context)
        return context

    def new_page(self, **options: Any) -> Page:
        """A page in a fresh context of its own (see `new_context`)."""
        return self.new_context(**options).new_page()

    def _guard(self, route: Route) -> None:
        url = route.request.url
        if is_allowed(url, self.allowed_hosts):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")

    def _guard_web_socket(self, socket: WebSocketRoute) -> None:
        if is_allowed(socket.url, self.allowed_hosts):
            socket.connect_to_server()
        else:
            self.blocked.append(socket.url)
            socket.close(code=1008, reason="blocked: only 127.0.0.1")

    def close(self) -> None:
        """Close every context, the browser and Playwright's driver (waits for them to exit)."""
        for context in self._contexts:
            context.close()
        self._contexts.clear()
        if self._browser is not None:
            self._browser.close()
            self._browser = None
        if self._playwright is not None:
            self._playwright.stop()
            self._playwright = None

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
