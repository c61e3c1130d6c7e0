"""Peak memory of a gunicorn worker taking a 20 MB upload.

    python bench/upload_memory.py [--megabytes N] [--postgres URL]

Starts a real gunicorn (one gthread worker, gunicorn.conf.py) with the
default form taking files, posts a small file first (so every module and
connection is in place), reads the worker's peak RSS (VmHWM in
/proc/<pid>/status), posts one N MB PDF as multipart/form-data from a
client that streams it, and reads VmHWM again. The increase is what the
upload cost in memory; the target is under 5 MB: the file goes to a
temporary file as it arrives and into the database in 256 kB chunks, never
whole in memory. Exit status 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from pgschema import throwaway_schema  # noqa: E402
from run import base_env  # noqa: E402

PY = sys.executable
TARGET_MB = 5.0
BOUNDARY = "----formpost-bench-" + secrets.token_hex(8)
CHUNK = 64 * 1024


def vm_hwm_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))


def worker_pid(master: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise SystemExit("gunicorn started no worker")


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("gunicorn did not answer")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def multipart(size: int) -> tuple[int, Iterator[bytes]]:
    """A form with one PDF of `size` bytes: its length and its bytes, streamed."""
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="email"\r\n\r\n'
        "ada@example.net\r\n"
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="message"\r\n\r\n'
        "Here is my CV.\r\n"
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="cv"; filename="cv.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    magic = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"

    def body() -> Iterator[bytes]:
        yield head + magic
        left = size - len(magic)
        while left > 0:
            n = min(CHUNK, left)
            yield os.urandom(n)
            left -= n
        yield tail

    return len(head) + size + len(tail), body()


def post_file(port: int, size: int) -> int:
    length, body = multipart(size)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.putrequest("POST", "/f/default")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
    conn.putheader("Content-Length", str(length))
    conn.putheader("Origin", "https://www.example.com")
    conn.putheader("Accept", "application/json")
    conn.endheaders()
    for piece in body:
        conn.send(piece)
    answer = conn.getresponse()
    text = answer.read()
    if answer.status != 200:
        raise SystemExit(f"upload refused: {answer.status} {text[:300]!r}")
    return answer.status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=20)
    parser.add_argument(
        "--postgres",
        default=None,
        help="a PostgreSQL URL (postgresql+psycopg://...): a throw-away schema "
        "is made there and dropped",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check the harness runs; print the figures but do not judge them",
    )
    args = parser.parse_args()
    if args.postgres:
        with throwaway_schema(args.postgres) as url:
            measure(args.megabytes, url, args.smoke)
    else:
        measure(args.megabytes, None, args.smoke)


def measure(megabytes: int, database_url: str | None, smoke: bool = False) -> None:
    """Run gunicorn, upload, print the worker's peak RSS increase; exit 1 if over.

    With `smoke`, the figure is printed but not judged (make test's smoke run:
    under a loaded test suite the peak moves by a megabyte or more).
    """
    size = megabytes * 1024 * 1024
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        port = free_port()
        env = base_env(
            tmp,
            free_port(),  # no worker runs: nothing is delivered
            ATTACHMENTS_MAX_FILES="1",
            ATTACHMENTS_MAX_FILE_SIZE=f"{megabytes + 1}MB",
            ATTACHMENTS_MAX_TOTAL_SIZE=f"{megabytes + 1}MB",
        )
        if database_url:
            env["DATABASE_URL"] = database_url
        cmd = [PY, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")]
        cmd += ["-w", "1", "--bind", f"127.0.0.1:{port}", "--no-control-socket"]
        cmd += ["wsgi:app"]
        log = open(tmp / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            wait_for_port(port, proc)
            worker = worker_pid(proc.pid)
            post_file(port, 64 * 1024)  # warm: imports, connections, caches
            before = vm_hwm_kib(worker)
            started = time.monotonic()
            post_file(port, size)
            took = time.monotonic() - started
            after = vm_hwm_kib(worker)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            log.close()
    increase = (after - before) / 1024
    print(f"upload:            {megabytes} MB in {took:.2f} s")
    print(
        f"worker peak RSS:   {before / 1024:.1f} MB before, {after / 1024:.1f} MB after"
    )
    print(f"increase:          {increase:.2f} MB (target: under {TARGET_MB:g} MB)")
    ok = increase < TARGET_MB
    print("result:            " + ("met" if ok else "MISSED"))
    sys.exit(0 if ok or smoke else 1)


if __name__ == "__main__":
    main()
