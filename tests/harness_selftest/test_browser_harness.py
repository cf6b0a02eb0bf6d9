"""The harnesses the inbox tests stand on: a real Chromium that reaches 127.0.0.1 only, and newman.

A page is served by a real http.server on 127.0.0.1 from a thread of the test process; the vendor's Postman
collection runs against a fake on 127.0.0.1 that answers 200 `{}` to everything.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.harness.browser import SCREENSHOTS, Browser, screenshot, screenshots_taken
from tests.harness.net import stop_quickly
from tests.harness.newman import LOCAL_HOST, postman_files, run_collection

CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'"

PAGES: dict[str, tuple[str, str, str | None]] = {
    # path: (content type, body, Content-Security-Policy)
    "/": (
        "text/html; charset=utf-8",
        """<!DOCTYPE html>
<html><head><title>harness</title><script src="/app.js" defer></script></head>
<body>
<p id="state">waiting</p>
<button id="press" type="button">Press</button>
<script>document.title = "inline script ran";</script>
</body></html>""",
        CSP,
    ),
    "/app.js": (
        "text/javascript",
        """document.getElementById("press").addEventListener("click", () => {
  document.getElementById("state").textContent = "pressed";
});""",
        CSP,
    ),
    # no CSP of its own: only the browser's guard stands between it and the outside
    "/outside": (
        "text/html; charset=utf-8",
        """<!DOCTYPE html>
<html><head><title>outside</title>
<script src="http://cdn.example.com/library.js"></script>
<script src="https://203.0.113.7/tracker.js"></script>
</head><body><p id="loaded">page</p>
<img src="https://images.example.net/pixel.png" alt="">
</body></html>""",
        None,
    ),
}


class PageServer(ThreadingHTTPServer):
    """Serves PAGES on 127.0.0.1 and records every path asked for."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), PageHandler)
        self.paths: list[str] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class PageHandler(BaseHTTPRequestHandler):
    server: PageServer

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        page = PAGES.get(urlsplit(self.path).path)
        if page is None:
            self.send_error(404)
            return
        content_type, text, csp = page
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if csp:
            self.send_header("Content-Security-Policy", csp)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class EmptyJsonServer(ThreadingHTTPServer):
    """Answers 200 `{}` to every GET and POST on 127.0.0.1, and records (method, path, form or query)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EmptyJsonHandler)
        self.received: list[tuple[str, str, dict[str, list[str]]]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class EmptyJsonHandler(BaseHTTPRequestHandler):
    server: EmptyJsonServer

    def answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        fields = parse_qs(body or urlsplit(self.path).query, keep_blank_values=True)
        self.server.received.append((self.command, self.path, fields))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = answer  # noqa: N815 (http.server names)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[None]:
    """Serve from a thread until the block ends, then stop and close the server."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop_quickly(server.shutdown, server.server_address[1])
        thread.join()
        server.server_close()


@pytest.fixture
def pages() -> Iterator[PageServer]:
    server = PageServer()
    with serving(server):
        yield server


@pytest.fixture
def empty_json() -> Iterator[EmptyJsonServer]:
    server = EmptyJsonServer()
    with serving(server):
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as started:
        yield started


def test_a_click_runs_the_pages_script_under_its_csp_and_the_screenshot_is_kept(
    browser: Browser, pages: PageServer
) -> None:
    page = browser.new_page()
    response = page.goto(pages.url + "/")
    assert response is not None and response.headers["content-security-policy"] == CSP
    assert page.locator("#state").text_content() == "waiting"

    page.locator("#press").click()

    page.wait_for_function("document.getElementById('state').textContent === 'pressed'")
    assert page.locator("#state").text_content() == "pressed"
    assert page.title() == "harness"  # the inline script was refused: the CSP holds
    path = screenshot(page, "browser harness: pressed")
    assert path.parent == SCREENSHOTS and path.name == "browser-harness-pressed.png"
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 1000
    assert path in screenshots_taken()
    assert pages.paths == ["/", "/app.js"]
    page.context.close()


def test_nothing_leaves_127_0_0_1(browser: Browser, pages: PageServer) -> None:
    before = len(browser.blocked)
    page = browser.new_page()
    page.goto(pages.url + "/outside")

    assert page.locator("#loaded").text_content() == "page"
    assert sorted(browser.blocked[before:]) == [
        "http://cdn.example.com/library.js",
        "https://203.0.113.7/tracker.js",
        "https://images.example.net/pixel.png",
    ]
    assert page.evaluate("[...document.images].every(image => image.naturalWidth === 0)")
    assert pages.paths == ["/outside"]
    page.context.close()


def test_newman_runs_the_vendors_collection_against_127_0_0_1_only(empty_json: EmptyJsonServer) -> None:
    run = run_collection(empty_json.url, api_key="harness-key")

    assert len(run.requests) == 17
    assert {request.host for request in run.requests} == {LOCAL_HOST}
    assert all(request.url.startswith(empty_json.url + "/") for request in run.requests), run.requests
    assert [request.status for request in run.requests] == [200] * 17
    assert run.failed == []
    assert run.report["run"]["stats"]["assertions"] == {"total": 17, "pending": 0, "failed": 0}
    # what reached the fake: every request, each with the key given, none with the vendor's placeholder
    assert len(empty_json.received) == 17
    assert all(fields["apikey"] == ["harness-key"] for _, _, fields in empty_json.received)
    assert ("POST", "/notification/send") in {(method, path) for method, path, _ in empty_json.received}
    assert "replace-with-your-api-key" not in json.dumps(empty_json.received)


def _vendors_own_base_url() -> str:
    """Return the base URL the vendor's environment file names: the one a careless run would call."""
    environment = json.loads(postman_files()[1].read_text())
    [url] = [v["value"] for v in environment["values"] if v["key"] == "baseUrl"]
    return str(url)


@pytest.mark.parametrize("base_url", [_vendors_own_base_url(), "http://localhost:8080", "http://10.0.0.1"])
def test_newman_refuses_a_base_url_off_127_0_0_1_before_it_starts(base_url: str) -> None:
    with pytest.raises(AssertionError, match=r"Send SMS: .* is not on 127\.0\.0\.1"):
        run_collection(base_url)
