"""gunicorn's gevent worker, answering the requests gunicorn itself refuses in the dialect.

gunicorn reads the request line and the headers before the app runs. What it cannot read (a raw
non-ASCII byte or a control character in the request line or a header, a header line too long, a
broken chunked body, an unknown transfer coding) it answers with an HTML page of its own, which a PHP
integration cannot read, and it logs the request line it refused, which may hold a key. Here those
answers are the dialect's JSON error (`error` 27 `malformed_request`, or 24 `uri_too_long`), with the
status gunicorn would have used, and the log line names the refusal, never the request.

Only the answer changes: the connection is closed after it, as gunicorn does. Any other failure (the
app's own) goes to gunicorn's handling, which ends in the app's own error pages anyway.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from gunicorn.http import errors as http_errors
from gunicorn.util import write_nonblock
from gunicorn.workers.ggevent import GeventWorker

from app.errors import CallerError, UriTooLong
from app.fronts.smsmobileapi.dialect import error_result

#: what gunicorn refuses before the app runs, and the status it answers (the rest: 400)
_STATUS: dict[type[Exception], tuple[int, str]] = {
    http_errors.LimitRequestLine: (414, "URI Too Long"),
    http_errors.LimitRequestHeaders: (431, "Request Header Fields Too Large"),
    http_errors.UnsupportedTransferCoding: (501, "Not Implemented"),
    http_errors.ExpectationFailed: (417, "Expectation Failed"),
    http_errors.ForbiddenProxyRequest: (403, "Forbidden"),
}

#: not the caller's fault (an answer header the app made, gunicorn's own set-up) or not an error to answer
_NOT_REFUSALS = (
    # Newer than types-gunicorn's stubs (26.2): gunicorn 27 has them.
    http_errors.InvalidResponseHeader,  # type: ignore[attr-defined]
    http_errors.InvalidResponseHeaderName,  # type: ignore[attr-defined]
    http_errors.ConfigurationProblem,
    http_errors.NoMoreData,
)

#: the request-reading errors gunicorn answers itself: every other one gunicorn.http.errors defines, so
#: that one added by a later gunicorn is answered in the dialect too
_REFUSALS: tuple[type[Exception], ...] = tuple(
    value
    for value in vars(http_errors).values()
    if isinstance(value, type)
    and issubclass(value, Exception)
    and value.__module__ == http_errors.__name__
    and not issubclass(value, _NOT_REFUSALS)
)


class MalformedRequest(CallerError):
    """The request line or its headers could not be read (gunicorn refused them before the app ran)."""

    code, name = 27, "malformed_request"


def refusal_answer(exc: Exception) -> bytes:
    """Return the whole HTTP answer, in the dialect, to a request gunicorn could not read."""
    status, reason = _STATUS.get(type(exc), (400, "Bad Request"))
    error: CallerError
    if isinstance(exc, http_errors.LimitRequestLine):
        error = UriTooLong("the request line is too long: POST the parameters instead")
    else:
        # The exception's name only: its text quotes the request line or header, which may hold a key.
        error = MalformedRequest(
            f"the request could not be read ({type(exc).__name__}): a control character or a byte past "
            "ASCII in the request line or a header (percent-encode it), or a header or body that breaks "
            "HTTP/1.1; nothing was sent"
        )
    body = json.dumps({"result": error_result(error), "error": error.code, "message": error.note}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class DialectGeventWorker(GeventWorker):
    """gunicorn's gevent worker whose own refusals are answered in the dialect (see the module)."""

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        # _NOT_REFUSALS first: gunicorn's own base classes (ParseException, InvalidHeader) are refusals too.
        if isinstance(exc, _NOT_REFUSALS) or not isinstance(exc, _REFUSALS):
            super().handle_error(req, client, addr, exc)
            return
        peer, kind = (addr[0] if addr else ""), type(exc).__name__
        self.log.warning("refused a request gunicorn could not read, from ip=%s: %s", peer, kind)
        try:
            write_nonblock(client, refusal_answer(exc))
        except OSError:
            self.log.debug("could not send the refusal")
