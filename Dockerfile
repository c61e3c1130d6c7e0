# Formpost image: one image, two roles (the lines of the Procfile).
#   docker build -t formpost .
#   web:    docker run -p 8000:8000 --env-file .env -v formpost-data:/data formpost
#           (nginx on BIND in front of the Procfile's gunicorn: deploy/docker/web.py)
#   worker: docker run --env-file .env -v formpost-data:/data formpost flask --app wsgi worker
FROM python:3.11.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    INSTANCE_PATH=/data \
    BIND=0.0.0.0:8000

# nginx holds idle and slow connections, so that gunicorn's threads only
# ever serve complete requests (deploy/nginx/formpost.conf says why).
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx-light \
 && rm -rf /var/lib/apt/lists/*

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
COPY deploy/docker/ deploy/docker/
COPY deploy/nginx/ deploy/nginx/
COPY app/ app/
COPY templates/ templates/
COPY static/ static/

USER formpost
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4); sys.exit(r.status != 200)"]

# nginx on BIND, in front of the Procfile's web line (gunicorn wsgi:app, with
# its settings from gunicorn.conf.py) on a private Unix socket.
CMD ["python", "deploy/docker/web.py"]
