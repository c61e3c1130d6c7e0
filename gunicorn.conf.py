"""gunicorn settings for Formpost, read by `gunicorn wsgi:app` from this folder.

Only process settings live here; the application reads its own configuration
in config.py.
"""

import multiprocessing
import os
import sys

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


def _json_logs() -> bool:
    """LOG_FORMAT=json, read as the app reads it (the environment, then .env)."""
    # This file is read before gunicorn puts its folder on sys.path.
    here = os.path.dirname(os.path.abspath(globals().get("__file__", "x")))
    if here not in sys.path:
        sys.path.insert(0, here)
    from config import setting

    return (setting("LOG_FORMAT") or "").strip().lower() == "json"


if _json_logs():
    # One JSON object per line from every process: gunicorn's own lines go
    # through Formpost's formatter, and its access line is off, because the
    # app already writes one JSON line per request (app/logs.py).
    accesslog = None
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "app.logs.JSONFormatter"}},
        "filters": {"not_formpost": {"()": "app.logs.NotFormpost"}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            },
            # Libraries, Flask and warnings; Formpost's loggers have their own.
            "others": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["not_formpost"],
                "stream": "ext://sys.stderr",
            },
        },
        "root": {"level": "WARNING", "handlers": ["others"]},
        "loggers": {
            "gunicorn.error": {
                "level": "INFO",
                "handlers": ["json"],
                "propagate": False,
            },
        },
    }

# gunicorn 25+ opens a control socket at one fixed path per user; several
# instances on a host (tests, benchmarks, two sites) would fight over it, and
# Formpost does not use gunicornc.
control_socket_disable = True


def on_starting(server):  # noqa: ANN001 - gunicorn's hook signature
    """Build the app once before any worker starts: a bad setting stops here.

    A worker that cannot start exits and gunicorn boots another, for ever, so
    the master checks first. The app is built in a throw-away child process,
    so nothing it opens (database connections, files) is inherited by the
    workers; the child prints the one FAIL line and the master exits with its
    status (78 for a bad setting, 69 for a database that does not answer).
    """
    server.formpost_boot_failed = multiprocessing.Value("b", 0)  # see post_fork
    pid = os.fork()
    if pid == 0:  # the check's own process
        status = 1
        try:
            from app import create_app

            create_app()
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - a bug: show it, then stop
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if status != 0:
        sys.exit(status if status > 0 else 1)


def post_fork(server, worker):  # noqa: ANN001 - gunicorn's hook signature
    """Make a worker whose start-up stops halt gunicorn instead of looping.

    on_starting has checked the settings, but a worker can still fail to
    start later (the database went away, a reload read a changed .env). Its
    status becomes gunicorn's WORKER_BOOT_ERROR, on which the master stops.
    """
    # Set by the first worker that cannot start; only that one reports
    # WORKER_BOOT_ERROR. gunicorn halts on the first, and a second one reaped
    # while it stops the others escapes as a traceback with status 1
    # (gunicorn 27, Arbiter.stop). Shared memory made by on_starting in the
    # master, kept on the arbiter, which outlives reloads (this file is read
    # again on HUP, on_starting is not run again).
    boot_failed = server.formpost_boot_failed
    load_wsgi = worker.load_wsgi

    def load_or_halt() -> None:
        try:
            load_wsgi()
        except SystemExit:
            with boot_failed.get_lock():
                first = not boot_failed.value
                boot_failed.value = 1
            raise SystemExit(server.WORKER_BOOT_ERROR if first else 1) from None

    worker.load_wsgi = load_or_halt


def child_exit(server, worker):  # noqa: ANN001 - gunicorn's hook signature
    """Tell prometheus-client's multiprocess mode that a worker is gone."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
