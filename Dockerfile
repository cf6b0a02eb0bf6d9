# smsbridge: docker build -t smsbridge . && docker run -p 8080:8080 -v smsbridge-data:/data smsbridge
FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SMSBRIDGE_DATA_DIR=/data

RUN useradd --system --create-home --uid 10001 smsbridge \
 && mkdir /data && chown smsbridge /data

WORKDIR /srv/smsbridge

# Dependencies first, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir app && touch app/__init__.py \
 && pip install --no-cache-dir . \
 && pip uninstall --yes smsbridge \
 && rm -rf app

COPY app ./app
COPY wsdl ./wsdl
COPY wsgi.py gunicorn.conf.py ./

USER smsbridge
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
