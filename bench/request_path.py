"""CPU per request of the accept path in one process, with no server around it.

    python bench/request_path.py [--requests N]

Calls the WSGI apps directly (`app(environ, start_response)`) with the
benchmark's form post and prints the CPU each request costs:

- bare Flask that only parses the form (bench/bare.py);
- Formpost up to the ledger, with `Ledger.enqueue` replaced by a stub:
  validation, composition, headers, the JSON answer;
- Formpost with the ledger (SQLite, synchronous=FULL), one thread;
- the same with eight threads, so that posts share commits.

Together with gunicorn's own cost (bench/run.py measures the whole) this is
how bench/README.md's request-path figures were taken.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bare  # noqa: E402
from run import base_env  # noqa: E402

from app import create_app  # noqa: E402

FORM = (
    b"name=Ada+Lovelace&email=ada%40example.net&subject=Benchmark&"
    b"message=Hello%2C+this+is+a+benchmark+message+with+a+few+lines.%0D%0A"
    b"It+has+more+than+one+line%2C+and+some+%3Cb%3Emarkup%3C%2Fb%3E+to+escape.&"
    b"_gotcha="
)


def environ() -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/f/default",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(FORM)),
        "HTTP_ACCEPT": "application/json",
        "HTTP_ORIGIN": "https://www.example.com",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.input": io.BytesIO(FORM),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


def post(app: Any) -> None:
    status = []
    body = b"".join(app(environ(), lambda s, h, e=None: status.append(s)))
    if not status[0].startswith("200"):
        raise RuntimeError(f"{status[0]}: {body[:200]!r}")


def cpu_per_request(app: Any, requests: int, threads: int = 1) -> float:
    """Return the process CPU, in microseconds, per request."""
    for _ in range(min(200, requests)):
        post(app)  # warm up: imports, caches, the first connection

    def loop(n: int) -> None:
        for _ in range(n):
            post(app)

    workers = [
        threading.Thread(target=loop, args=(requests // threads,))
        for _ in range(threads)
    ]
    started = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (time.process_time() - started) / (requests // threads * threads) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    requests = parser.parse_args().requests
    with tempfile.TemporaryDirectory(prefix="formpost-path-") as tmp:
        # The same settings as bench/run.py's gunicorn; no log file to write.
        os.environ.update(base_env(Path(tmp), 2525, LOG_LEVEL="WARNING"))
        formpost = create_app()
        ledger = formpost.extensions["formpost"].ledger
        print(f"{'request path, one process':<34}{'threads':>8}{'CPU µs/req':>12}")

        def show(label: str, threads: int, cpu: float) -> None:
            print(f"{label:<34}{threads:>8}{cpu:>12.0f}")

        show("bare Flask, parse only", 1, cpu_per_request(bare.app, requests))
        # Everything but the ledger: an instance attribute shadows the method.
        ledger.enqueue = lambda *args, **kwargs: "AAAA-BBBB"
        try:
            show("Formpost, ledger stubbed", 1, cpu_per_request(formpost, requests))
        finally:
            del ledger.enqueue
        for threads in (1, 8):
            cpu = cpu_per_request(formpost, requests, threads)
            show("Formpost, SQLite FULL", threads, cpu)


if __name__ == "__main__":
    main()
