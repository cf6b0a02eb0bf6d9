"""The WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app`."""

import sys

from app import create_app
from app.config import ConfigError

try:
    app = create_app()
except ConfigError as error:
    # One line, not a traceback; exit status 4 is gunicorn's "App failed to load": the master stops.
    sys.stderr.write(f"smsbridge: {error}\n")
    sys.exit(4)
