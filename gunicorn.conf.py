"""gunicorn settings for smsbridge: `gunicorn -c gunicorn.conf.py wsgi:app`."""

import os
import shutil

# Metrics are summed over the workers through files in this directory (prometheus_client's
# multiprocess mode). It must be set before anything imports prometheus_client, so before the app.
_data_dir = os.environ.get("SMSBRIDGE_DATA_DIR") or "data"
os.makedirs(_data_dir, mode=0o700, exist_ok=True)  # the owner's only, as app.startup makes it
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(_data_dir, "metrics"))
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], mode=0o700, exist_ok=True)

from gunicorn import glogging  # noqa: E402

from app import redaction  # noqa: E402 (after PROMETHEUS_MULTIPROC_DIR)
from app.config import ConfigError, Settings  # noqa: E402 (after PROMETHEUS_MULTIPROC_DIR)

try:
    _settings = Settings.from_env()
except ConfigError as error:
    raise SystemExit(f"smsbridge: {error}") from None

bind = os.environ.get("SMSBRIDGE_BIND", "0.0.0.0:8080")
# One worker per core by default (SMSBRIDGE_WORKERS): a worker is held to one core by the GIL. Their
# rate-limit counts are one exact count in SQLite (sqlite://, the default) or Redis; Settings refuses
# several workers with memory://.
workers = _settings.workers
# The bridge mostly waits on slow upstreams (100 ms to 2 s): gevent keeps up to worker_connections
# requests in flight per worker, each a greenlet, for far less CPU per request than threads (measured:
# README, "Runtime").
worker_class = "gevent"
worker_connections = 1000

# Above the upstream connect + read timeouts (3 s + 7 s by default), so that a send in flight
# finishes and its answer reaches the client when the worker is stopped or restarted.
# (Longer upstream timeouts in the settings lengthen these with them.)
timeout = graceful_timeout = max(30, int(_settings.connect_timeout + _settings.read_timeout) + 5)
keepalive = 5

# Long enough for the bridge to answer an over-long query string in the dialect itself (414, JSON);
# past these, gunicorn answers 400 on its own.
limit_request_line = 8190
limit_request_field_size = 8190

# No access log: the request log (app/request_log.py) already writes one JSON line per request, with
# more in it, and a second line per request cost about 5% of the CPU of a send. Turned on
# (GUNICORN_CMD_ARGS="--access-logfile=-"), it shows the path without its query string, which can
# carry `apikey` and the message.
accesslog = None
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'
errorlog = "-"


class RedactingLogger(glogging.Logger):
    """gunicorn's logger, with app.redaction's filter on its error and access handlers.

    gunicorn logs a request line it rejects (a control character or raw UTF-8 in the query) whole, with
    the caller's apikey and message in it. `setup` runs again when the logs are reopened (SIGUSR1).
    """

    def setup(self, cfg: object) -> None:
        super().setup(cfg)
        redaction.protect(self.error_log, self.access_log)


logger_class = RedactingLogger


def on_starting(server: object) -> None:
    """Prepare the data directory once, before any worker starts; start with no metrics left over."""
    from app import startup

    try:
        startup.prepare(_settings)
    except ConfigError as error:
        # Said in one line, as an invalid setting is, not as a traceback.
        raise SystemExit(f"smsbridge: {error}") from None
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)


def child_exit(server: object, worker: object) -> None:
    """Let a dead worker's live gauges go (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def post_fork(server: object, worker: object) -> None:
    """Make a SIGTERM that comes while the worker is still starting stop it.

    The gevent worker monkey-patches the standard library (a few hundred ms) before it installs its own
    signal handlers; until then a SIGTERM goes to the handler inherited from the master, which does
    nothing in a worker, and the worker would serve on until the graceful timeout ran out and the
    master killed it. The worker's own handler, installed here first, lets it finish starting and stop.
    """
    import signal

    signal.signal(signal.SIGTERM, worker.handle_exit)  # type: ignore[attr-defined]
