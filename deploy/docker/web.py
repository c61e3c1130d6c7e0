"""The image's web role: nginx on BIND in front of gunicorn on a Unix socket.

gunicorn's threads each serve one connection at a time, so a few dozen idle
or trickling connections could hold all of them; nginx holds any number and
passes on only complete requests (deploy/nginx/formpost.conf says how).
This runs the Procfile's web line unchanged, settings from gunicorn.conf.py,
with BIND pointed at a private socket and TRUSTED_PROXY_HOPS counting this
nginx; then nginx, listening where BIND said. It exits when either does,
with that one's status. SIGTERM or SIGINT: nginx finishes its requests and
stops, then gunicorn. SIGHUP reloads gunicorn.

Settings (environment): BIND (default 0.0.0.0:8000, nginx's `listen`) and
FORMPOST_RUN_DIR (default /tmp/formpost-web: config, socket, temp files).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "formpost.conf"
TEMP_FOLDERS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
START_WAIT = 60.0  # for gunicorn to open its socket (the app loads first)
NGINX_GRACE = 10.0  # for nginx to finish the requests it holds


def web_command() -> list[str]:
    """Return the Procfile's web line as argv."""
    for line in (ROOT / "Procfile").read_text(encoding="utf-8").splitlines():
        role, _, command = line.partition(":")
        if role.strip() == "web":
            return shlex.split(command)
    raise SystemExit("Procfile has no web line")


def proxy_hops(environ: dict[str, str]) -> str | None:
    """TRUSTED_PROXY_HOPS plus this nginx; None to leave a bad value to config.py."""
    raw = environ.get("TRUSTED_PROXY_HOPS", "").strip() or "0"
    return str(int(raw) + 1) if raw.isdigit() else None


def write_config(run: Path, listen: str, socket_path: Path) -> Path:
    """Fill in the nginx template; return the path of the result."""
    for folder in TEMP_FOLDERS:
        (run / folder).mkdir(parents=True, exist_ok=True)
    text = TEMPLATE.read_text(encoding="utf-8")
    for name, value in (
        ("@RUN@", str(run)),
        ("@LISTEN@", listen),
        ("@SOCKET@", str(socket_path)),
    ):
        text = text.replace(name, value)
    path = run / "nginx.conf"
    path.write_text(text, encoding="utf-8")
    return path


def stop(proc: subprocess.Popen, sig: int, grace: float) -> None:
    """Send `sig`; kill after `grace` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    """Run gunicorn and nginx until a signal, or until either one exits."""
    listen = os.environ.get("BIND", "").strip() or "0.0.0.0:8000"
    if listen.startswith("unix:") or " " in listen:
        raise SystemExit(f"BIND must be host:port in the image, not {listen!r}")
    run = Path(os.environ.get("FORMPOST_RUN_DIR") or "/tmp/formpost-web")
    run.mkdir(parents=True, exist_ok=True)
    socket_path = run / "gunicorn.sock"
    socket_path.unlink(missing_ok=True)
    config = write_config(run, listen, socket_path)

    stopping = threading.Event()
    hangup = threading.Event()

    def on_stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        hangup.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)

    env = dict(os.environ, BIND=f"unix:{socket_path}")
    hops = proxy_hops(env)
    if hops is not None:
        env["TRUSTED_PROXY_HOPS"] = hops
    gunicorn = subprocess.Popen(web_command(), cwd=ROOT, env=env)
    # Listen once gunicorn does; if gunicorn stops at start-up (a bad
    # setting), exit with its status rather than answer 502 for ever.
    started = time.monotonic()
    while not socket_path.exists():
        if gunicorn.poll() is not None:
            return gunicorn.returncode
        if stopping.wait(0.05) or time.monotonic() - started > START_WAIT:
            stop(gunicorn, signal.SIGTERM, 30)
            return 0 if stopping.is_set() else 1
    nginx_cmd = [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(run)]
    nginx_cmd += ["-c", str(config), "-e", "stderr"]
    if os.geteuid() == 0:
        # Started as root (the image never is), nginx would serve as nobody,
        # who may not open gunicorn's socket: stay the one user instead.
        nginx_cmd += ["-g", f"user {pwd.getpwuid(0).pw_name};"]
    nginx = subprocess.Popen(nginx_cmd)

    while not stopping.wait(0.2):
        if hangup.is_set():
            hangup.clear()
            gunicorn.send_signal(signal.SIGHUP)
        if gunicorn.poll() is not None or nginx.poll() is not None:
            break
    stop(nginx, signal.SIGQUIT, NGINX_GRACE)  # graceful: finish what it holds
    stop(gunicorn, signal.SIGTERM, 30)  # graceful_timeout is 20 s
    if stopping.is_set():
        return gunicorn.returncode if gunicorn.returncode > 0 else 0
    # One of them died on its own: say so with a failing status.
    return next((p.returncode for p in (gunicorn, nginx) if p.returncode), 1)


if __name__ == "__main__":
    sys.exit(main())
