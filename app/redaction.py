"""Keep keys, tokens, secrets and message text out of every log line, whoever writes it.

One filter, `RedactSecrets`, is put on every handler that writes: the root logger's (the bridge's own
modules, spyne, urllib3 and werkzeug propagate there), the request log's, and gunicorn's error and
access logs (gunicorn.conf.py's `logger_class`). A filter on a handler sees
every record that reaches it, propagated ones included, which a filter on a logger would not.

What it hides, in the formatted message:
- a query string, whole, to its end: gunicorn logs a request line it rejects (a control character or
  raw UTF-8 in the query) as it came, `apikey` and `message` with it; urllib3 logs each upstream URL at
  DEBUG; a webhook source URL carries its key in `?key=`;
- `name=value` and `"name": "value"` pairs whose name says key, token, secret, password or message;
- the credentials after `Bearer` and `Basic`, and a URL's `user:password@`.
Hiding more than needed is fine here; hiding less is not.
"""

from __future__ import annotations

import logging
import re

_HIDDEN_FIELDS = (
    r"apikey|api_key|key|token|access_token|refresh_token|client_secret|secret|password|passwd"
    r"|message|msg|text|sig|signature"
)
#: one pattern, one pass over each message (this runs on every log line, the request log's included)
_SECRETS = re.compile(
    # A query string to its end: over spaces and quotes too (a rejected request line), up to " HTTP/".
    r"(?P<query>\?\S*(?:\s(?!HTTP/)\S*)*)"
    rf"|\b(?P<pair>{_HIDDEN_FIELDS})=[^&\s'\"]*"
    rf"|(?P<json>[\"'](?:{_HIDDEN_FIELDS})[\"']\s*:\s*)(?:\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
    r"|\b(?P<scheme>Bearer|Basic)\s+[^\s'\"]+"
    r"|(?P<userinfo>(?<=://)[^/@\s'\"]+@)",
    re.IGNORECASE,
)


def _hidden(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "query":
        return "?***"
    if kind == "pair":
        return f"{match['pair']}=***"
    if kind == "json":
        return f'{match["json"]}"***"'
    if kind == "scheme":
        return f"{match['scheme']} ***"
    return "***@"


#: what any of those secrets shows, looked for first with `in` (far cheaper than the pattern, and most
#: lines, the request log's among them, hold none of it)
_SIGNS = ("?", "=", "://")
_LOWER_SIGNS = (
    "bearer",
    "basic",
    *(f"{quote}{name}{quote}" for name in _HIDDEN_FIELDS.split("|") for quote in "\"'"),
)


#: gunicorn's line for a request it refused: "Invalid request from ip=...: <kind>: <what it read>"
_REFUSED_REQUEST = re.compile(r"(Invalid request from ip=\S+ [^:'\"]*)[:'\"].*", re.DOTALL)


def redact(text: str) -> str:
    """Return `text` with every secret and message text this module knows of replaced by ***."""
    if text.startswith("Invalid request from ip="):
        # What follows the kind of error is the request line (or a part of it) as the client sent it:
        # a message with unencoded spaces splits into parts no pattern recognises as a message.
        return _REFUSED_REQUEST.sub(r"\1: ***", text)
    if not any(sign in text for sign in _SIGNS):
        lower = text.lower()
        if not any(sign in lower for sign in _LOWER_SIGNS):
            return text
    return _SECRETS.sub(_hidden, text)


class RedactSecrets(logging.Filter):
    """Scrub keys, tokens, secrets and message text from a log record before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = redact(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and not record.exc_text:
            # A traceback can quote a value (a KeyError's key, a URL in an exception's message).
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def protect(*loggers: logging.Logger) -> None:
    """Put the filter on every handler of `loggers` (the root logger when none is named), once."""
    for logger in loggers or (logging.getLogger(),):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets())
