"""gunicorn settings for smsbridge: `gunicorn -c gunicorn.conf.py wsgi:app`."""

import os

# The bridge waits on slow upstreams (100 ms to 2 s), so a worker serves many calls at once with threads.
bind = os.environ.get("SMSBRIDGE_BIND", "0.0.0.0:8080")
workers = int(os.environ.get("SMSBRIDGE_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("SMSBRIDGE_THREADS", "32"))

# Above the upstream connect + read timeouts (3 s + 7 s by default), so that a send in flight
# finishes and its answer reaches the client when the worker is stopped or restarted.
timeout = 30
graceful_timeout = 30
keepalive = 5

# The access log shows the path without its query string: a query can carry `apikey`.
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'
errorlog = "-"
