"""gunicorn settings for Formpost, read by `gunicorn wsgi:app` from this folder.

Only process settings live here; the application reads its own configuration
in config.py.
"""

import os

# BIND: where to listen. 127.0.0.1:8000 by default; the Docker image sets
# 0.0.0.0:8000. WEB_CONCURRENCY: worker processes (gunicorn's own variable);
# by default two per core, since each request also waits on a disk sync.
bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", str(2 * (os.cpu_count() or 1))))
# Requests only validate and commit one row; nothing here waits on SMTP.
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = "-"
# The app's ProxyFix (TRUSTED_PROXY_HOPS) is the one authority on forwarded
# headers; gunicorn must not set the scheme from X-Forwarded-Proto itself.
secure_scheme_headers: dict[str, str] = {}
forwarded_allow_ips = ""
# gunicorn 25+ opens a control socket at one fixed path per user; several
# instances on a host (tests, benchmarks, two sites) would fight over it, and
# Formpost does not use gunicornc.
control_socket_disable = True
