# Formpost image: one image, two roles (the lines of the Procfile).
#   docker build -t formpost .
#   web:    docker run -p 8000:8000 --env-file .env -v formpost-data:/data formpost
#   worker: docker run --env-file .env -v formpost-data:/data formpost flask --app wsgi worker
FROM python:3.11.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    INSTANCE_PATH=/data \
    BIND=0.0.0.0:8000

RUN groupadd --system --gid 10001 formpost \
 && useradd --system --uid 10001 --gid formpost --home-dir /app \
      --shell /usr/sbin/nologin formpost \
 && mkdir -p /data \
 && chown formpost:formpost /data

WORKDIR /app

# Dependencies first: this layer is reused until requirements.txt changes.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY config.py wsgi.py gunicorn.conf.py Procfile ./
COPY app/ app/
COPY templates/ templates/
COPY static/ static/

USER formpost
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4); sys.exit(r.status != 200)"]

# The Procfile's web line; settings come from gunicorn.conf.py.
CMD ["gunicorn", "wsgi:app"]
