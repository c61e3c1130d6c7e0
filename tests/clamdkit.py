"""Debian's real clamd on a unix socket in a temporary folder, for the scan tests.

The signature database is written here: one MD5 signature (.hdb) of the
EICAR test string, the antivirus industry's harmless test file. Nothing is
downloaded (no freshclam); clamd loads only this signature, so it starts
in a few seconds. Tests skip, saying why, when clamd is not installed.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CLAMD = Path("/usr/sbin/clamd")
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE = "Formpost.Test.EICAR"
START_TIMEOUT = 60.0


def clamd_or_skip() -> None:
    if not CLAMD.exists():
        pytest.skip("clamd is not installed (apt-get install clamav-daemon)")


def _answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1)
            sock.connect(str(path))
            sock.sendall(b"zPING\0")
            return sock.recv(16).startswith(b"PONG")
    except OSError:
        return False


@contextmanager
def running_clamd(folder: Path) -> Iterator[Path]:
    """Start clamd with only the EICAR signature; yield its socket's path."""
    clamd_or_skip()
    database = folder / "db"
    database.mkdir()
    digest = hashlib.md5(EICAR).hexdigest()  # noqa: S324 - clamd's .hdb format
    (database / "formpost.hdb").write_text(f"{digest}:{len(EICAR)}:{SIGNATURE}\n")
    sock = folder / "clamd.sock"
    conf = folder / "clamd.conf"
    conf.write_text(
        "Foreground yes\n"
        f"LocalSocket {sock}\n"
        f"DatabaseDirectory {database}\n"
        f"TemporaryDirectory {folder}\n"
        f"LogFile {folder / 'clamd.log'}\n"
        "StreamMaxLength 30M\n"
    )
    log = open(folder / "clamd.out", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(CLAMD), "-c", str(conf)], stdout=log, stderr=log, start_new_session=True
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "clamd did not start:\n" + (folder / "clamd.out").read_text()
                )
            time.sleep(0.1)
        yield sock
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        log.close()
