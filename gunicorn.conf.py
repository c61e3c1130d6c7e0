"""gunicorn settings for Formpost, read by `gunicorn wsgi:app` from this folder.

Only process settings live here; the application reads its own configuration
in config.py.
"""

import os

# BIND: where to listen. 127.0.0.1:8000 by default; in the Docker image
# nginx takes BIND and gunicorn a private socket (deploy/docker/web.py).
# Keep gunicorn behind a buffering proxy: a gthread thread waits on each
# connection it serves, so idle or slow clients could hold every one of
# them (docs/deploy.md, "Put a reverse proxy in front").
# WEB_CONCURRENCY: worker processes (gunicorn's own variable), one per core
# (at least two) by default. WEB_THREADS: request threads in each (default 8).
# Threads rather than more processes: posts that arrive together in one
# process are committed together, sharing one disk sync (app/ledger.py).


def _count(name: str, default: int) -> int:
    """Read a positive whole number; stop start-up naming the variable if not."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"{name} must be a whole number of at least 1, not {raw!r}")
    return int(raw)


bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = _count("WEB_CONCURRENCY", max(2, os.cpu_count() or 1))
worker_class = "gthread"
threads = _count("WEB_THREADS", 8)
# Requests only validate and commit one row; nothing here waits on SMTP.
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = "-"
# The classic combined line, plus the time taken and the request id Formpost
# gave the request (the same id is on its own log lines).
access_log_format = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" '
    "%(M)sms rid=%({x-request-id}o)s"
)
# The app's ProxyFix (TRUSTED_PROXY_HOPS) is the one authority on forwarded
# headers, counting exactly that many proxies; gunicorn must not also set the
# scheme from X-Forwarded-Proto (%(h)s above is the proxy's address).
secure_scheme_headers: dict[str, str] = {}
forwarded_allow_ips = ""
# gunicorn 25+ opens a control socket at one fixed path per user; several
# instances on a host (tests, benchmarks, two sites) would fight over it, and
# Formpost does not use gunicornc.
control_socket_disable = True


def child_exit(server, worker):  # noqa: ANN001 - gunicorn's hook signature
    """Tell prometheus-client's multiprocess mode that a worker is gone."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
