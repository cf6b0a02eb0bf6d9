"""gunicorn settings for smsbridge: `gunicorn -c gunicorn.conf.py wsgi:app`."""

import contextlib
import errno
import mmap
import os
import shutil
import struct
import sys
from collections.abc import Callable

# Metrics are summed over the workers through files in this directory (prometheus_client's
# multiprocess mode). It must be set before anything imports prometheus_client, so before the app.
# The operator may put it elsewhere (PROMETHEUS_MULTIPROC_DIR), on a disk of its own.
_data_dir = os.environ.get("SMSBRIDGE_DATA_DIR") or "data"
os.makedirs(_data_dir, mode=0o700, exist_ok=True)  # the owner's only, as app.startup makes it
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(_data_dir, "metrics"))

#: set once this process has said that its metrics are kept in memory only
_metrics_in_memory = False


def _metrics_off(why: str) -> None:
    """Say once per process, in one line, that this process's metrics are not shared any more."""
    global _metrics_in_memory
    if not _metrics_in_memory:
        _metrics_in_memory = True
        sys.stderr.write(
            f"smsbridge: metrics: {why}; process {os.getpid()} keeps its metrics in memory only (not "
            "in /metrics) and goes on serving; free space there, or set PROMETHEUS_MULTIPROC_DIR to "
            "another disk\n"
        )
        sys.stderr.flush()


def _allocate(fd: int, size: int) -> None:
    """Give the file `fd` real blocks up to `size` bytes (raise OSError, ENOSPC, when the disk is full)."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        # A file system without fallocate: write zeros past the end instead.
        start = os.fstat(fd).st_size
        if start < size:
            os.pwrite(fd, bytes(size - start), start)


def _guard_metrics_files() -> None:
    """Make a full metrics disk cost the metrics, never a process.

    prometheus_client grows its files with truncate (a hole) and writes to them through mmap: on a
    full disk, the first write to a page with no block behind it kills the process with SIGBUS (a
    worker on its first request; the master as it starts, since importing the app makes a counter).
    Here every block is allocated before it is mapped; when that fails, the process keeps its
    values in anonymous memory instead, and says so once.
    """
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from prometheus_client import mmap_dict, values

    initial = mmap_dict._INITIAL_MMAP_SIZE

    class PreallocatedMmapedDict(mmap_dict.MmapedDict):
        def __init__(self, filename: str, read_mode: bool = False) -> None:
            if read_mode:
                super().__init__(filename, read_mode)
                return
            existed = os.path.exists(filename)
            try:
                fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    _allocate(fd, max(initial, os.fstat(fd).st_size))
                finally:
                    os.close(fd)
                super().__init__(filename, read_mode)
            except OSError as error:
                _metrics_off(f"cannot allocate {filename}: {os.strerror(error.errno or 0)}")
                if not existed:
                    # A scrape must never read an empty file (prometheus_client cannot).
                    with contextlib.suppress(OSError):
                        os.unlink(filename)
                self._in_memory(filename, bytes(8), initial)

        def _in_memory(self, filename: str, content: bytes, capacity: int) -> None:
            self._f = None
            self._fname = filename
            self._capacity = capacity
            self._m = mmap.mmap(-1, capacity)
            self._m[: len(content)] = content
            if not hasattr(self, "_positions"):
                self._positions = {}
                self._used = 8
                struct.pack_into("i", self._m, 0, self._used)

        def _init_value(self, key: str) -> None:
            encoded = key.encode("utf-8")
            size = 4 + len(encoded) + (8 - (len(encoded) + 4) % 8) + 16  # as MmapedDict packs it
            capacity = self._capacity
            while self._used + size > capacity:
                capacity *= 2
            if capacity != self._capacity:
                if self._f is not None:
                    try:
                        _allocate(self._f.fileno(), capacity)
                    except OSError as error:
                        _metrics_off(f"cannot grow {self._fname}: {os.strerror(error.errno or 0)}")
                        content = bytes(self._m[: self._used])
                        self._m.close()
                        self._f.close()
                        self._in_memory(self._fname, content, capacity)
                else:
                    content = bytes(self._m[: self._used])
                    self._in_memory(self._fname, content, capacity)
            super()._init_value(key)

    values.MmapedDict = PreallocatedMmapedDict  # type: ignore[misc]


try:
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], mode=0o700, exist_ok=True)
except OSError as _error:
    _metrics_off(f"cannot make {os.environ['PROMETHEUS_MULTIPROC_DIR']}: {os.strerror(_error.errno or 0)}")
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]
_guard_metrics_files()

from gunicorn import glogging  # noqa: E402

from app import redaction  # noqa: E402 (after PROMETHEUS_MULTIPROC_DIR)
from app.config import ConfigError, Settings  # noqa: E402 (after PROMETHEUS_MULTIPROC_DIR)


def _in_a_child(work: Callable[[], object], failed: str) -> None:
    """Run `work` in a forked child: the master must import neither urllib3 nor psycopg.

    Parsing a URL imports urllib3 (the HTTP client's own parser); imported in the master, it would reach
    every worker before gevent patched ssl and keep the blocking ssl there. psycopg likewise chooses, when
    imported, whether it waits cooperatively. The child works, says what is wrong through a pipe, and
    exits; the master stops with that one line (`failed` when the child could not say), as for any
    other setting.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: check, report, and leave without running anything of the master's
        os.close(read)
        code = 0
        try:
            work()
        except (ConfigError, RuntimeError) as error:
            os.write(write, str(error).encode()[:65536])
            code = 1
        except BaseException:  # nothing may escape a forked child
            code = 2
        os._exit(code)
    os.close(write)
    said = b""
    while chunk := os.read(read, 65536):
        said += chunk
    os.close(read)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"smsbridge: {said.decode(errors='replace') or failed}")


try:
    # The webhook URL is checked apart (see above): its check imports urllib3.
    _settings = Settings.from_env(parse_urls=False)
except ConfigError as error:
    raise SystemExit(f"smsbridge: {error}") from None
if _settings.webhook_url:
    _in_a_child(Settings.from_env, "the settings could not be checked")

bind = os.environ.get("SMSBRIDGE_BIND", "0.0.0.0:8080")
# One worker per core by default (SMSBRIDGE_WORKERS): a worker is held to one core by the GIL. Their
# rate-limit counts are one exact count in SQLite (sqlite://, the default) or Redis; Settings refuses
# several workers with memory://.
workers = _settings.workers
# The bridge mostly waits on slow upstreams (100 ms to 2 s): gevent keeps up to worker_connections
# requests in flight per worker, each a greenlet, for far less CPU per request than threads (measured:
# README, "Runtime"). gunicorn's gevent worker, whose own refusals (a request line or header it
# cannot read) are answered in the dialect's JSON instead of an HTML page (app/gunicorn_worker.py).
worker_class = "app.gunicorn_worker.DialectGeventWorker"
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

# No access log: the request log (app/fronts/request_log.py) already writes one JSON line per request, with
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
        startup.prepare(_settings, migrate_shared=False)
    except ConfigError as error:
        # Said in one line, as an invalid setting is, not as a traceback.
        raise SystemExit(f"smsbridge: {error}") from None
    from app.state import shared_state

    if shared_state(_settings):  # psycopg only in a forked child: never imported in the master
        _in_a_child(lambda: startup.migrate_or_say(_settings), "the shared state could not be prepared")
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as error:
            # Each worker then finds it cannot write there, says so and keeps its metrics in memory.
            _metrics_off(f"cannot make {directory}: {os.strerror(error.errno or 0)}")


def child_exit(server: object, worker: object) -> None:
    """Let a dead worker's live gauges go (its counters stay counted)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
    except OSError as error:
        _metrics_off(f"cannot forget worker {worker.pid}'s gauges: {os.strerror(error.errno or 0)}")  # type: ignore[attr-defined]


def post_fork(server: object, worker: object) -> None:
    """Make a SIGTERM that comes while the worker is still starting stop it.

    The gevent worker monkey-patches the standard library (a few hundred ms) before it installs its own
    signal handlers; until then a SIGTERM goes to the handler inherited from the master, which does
    nothing in a worker, and the worker would serve on until the graceful timeout ran out and the
    master killed it. The worker's own handler, installed here first, lets it finish starting and stop.
    """
    import signal

    signal.signal(signal.SIGTERM, worker.handle_exit)  # type: ignore[attr-defined]


def worker_exit(server: object, worker: object) -> None:
    """Close the worker's PostgreSQL pools while its gevent hub still runs.

    Left to the interpreter's exit, an open psycopg pool's finaliser joins its threads (greenlets) once
    the hub is gone, and prints a traceback ("greenlet is being finalized") at every worker stop.
    """
    if "psycopg_pool" not in sys.modules:  # SQLite state and counts: nothing to close
        return
    from app.state import close_shared_state

    close_shared_state()
    extensions = getattr(getattr(worker, "wsgi", None), "extensions", {})  # None if the app never loaded
    limits = extensions.get("smsbridge.limiter")
    counts = getattr(limits.limiter.storage, "primary", None) if limits else None
    if counts is not None and hasattr(counts, "close"):
        counts.close()  # the postgresql:// counts' own pool
