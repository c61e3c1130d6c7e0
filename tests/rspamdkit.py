"""Debian's real rspamd on loopback, for the rspamd layer's tests and bench/spam.py.

`running_rspamd(directory)` writes a minimal configuration into `directory`,
starts /usr/bin/rspamd in the foreground with one normal worker (the one that
answers /checkv2) on a free loopback port, waits until it answers /ping and
stops it on exit. Everything else stays off: no controller, no proxy, no
Redis, no network. rspamd's stock rules and scores come from /etc/rspamd
(as in production); the modules that only ask DNS (RBLs, SURBL, ASN, SPF,
DKIM, DMARC) or other servers (fuzzy, Redis-backed
statistics and reputation) are turned off, and DNS points at a local port
nobody answers, so nothing can leave the machine. Formpost's own content
rules (deploy/rspamd/) are loaded as an owner would load them.

rspamd refuses to run as root unless told to; CI runs as root, so the kit
passes `--insecure` then (rspamd's own option for exactly this).

Start-up compiles rspamd's regular expressions with hyperscan; the compiled
cache is kept in HS_CACHE (a directory shared by all runs on the machine) so
only the first start pays for it (about 15 s here; later ones take under 1 s).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .relay import free_port

RSPAMD = Path("/usr/bin/rspamd")
STOCK_CONFDIR = Path("/etc/rspamd")
RULES = Path(__file__).resolve().parents[1] / "deploy" / "rspamd"
HS_CACHE = Path(tempfile.gettempdir()) / "formpost-rspamd-hs-cache"
# The first start compiles hyperscan databases: allow for a slow CI machine.
START_TIMEOUT = 90.0

# Modules that only do DNS or network lookups (or need Redis): off in tests.
# hfilter and once_received stay on: Formpost's requests turn their session
# checks off per request, and the tests show that they do.
OFF_MODULES = (
    "asn",
    "dkim",
    "dmarc",
    "fuzzy_check",
    "mx_check",
    "rbl",
    "surbl",
    "spf",
    "reputation",
    "url_redirector",
    "rspamd_update",
    "neural",
    "greylist",
    "ratelimit",
    "history_redis",
    "replies",
    "dcc",
)

CONFIG = """\
.include "$CONFDIR/common.conf"

options {{
  pidfile = "$RUNDIR/rspamd.pid";
  filters = "chartable,regexp";
  cache_file = "$DBDIR/symbols.cache";
  hs_cache_dir = "{hs_cache}/";
  url_tld = "${{SHAREDIR}}/effective_tld_names.dat";
  allow_raw_input = true;
  mime = true;
  task_timeout = 8s;
  dns {{
    nameserver = ["127.0.0.1:{dead_port}"];
    timeout = 0.2s;
    retransmits = 0;
  }}
}}

logging {{
  type = "file";
  filename = "$LOGDIR/rspamd.log";
  .include "$CONFDIR/logging.inc"
}}

worker "normal" {{
  bind_socket = "127.0.0.1:{port}";
  count = 1;
}}
"""


def log_path(directory: Path) -> Path:
    """Return where the rspamd started in `directory` writes its log."""
    return directory / "rspamd" / "rspamd.log"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=1.0) as reply:
            return reply.read().strip() == b"pong"
    except (OSError, urllib.error.URLError):
        return False


def _write_config(root: Path, port: int, dead_port: int) -> Path:
    for sub in ("local.d", "maps.d", "db", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    HS_CACHE.mkdir(exist_ok=True)
    for sub in ("local.d", "maps.d"):
        for rule in (RULES / sub).iterdir():
            shutil.copy(rule, root / sub / rule.name)
    for module in OFF_MODULES:
        (root / "local.d" / f"{module}.conf").write_text("enabled = false;\n")
    # Bayes keeps its tokens in Redis: no statistic backend at all here.
    (root / "local.d" / "classifier-bayes.conf").write_text("enabled = false;\n")
    config = root / "rspamd.conf"
    config.write_text(CONFIG.format(port=port, dead_port=dead_port, hs_cache=HS_CACHE))
    return config


def rspamd_available() -> bool:
    """Return whether Debian's rspamd is installed (for bench/, outside pytest)."""
    return RSPAMD.exists()


def rspamd_or_skip() -> None:
    """Skip the calling test when Debian's rspamd is not installed."""
    if not rspamd_available():
        pytest.skip("rspamd is not installed (/usr/bin/rspamd); .ci/run installs it")


@contextmanager
def running_rspamd(directory: Path) -> Iterator[str]:
    """Run rspamd with its configuration in `directory`; yield its base URL."""
    rspamd_or_skip()
    root = directory / "rspamd"
    port = free_port()
    # A UDP port bound and never read: any DNS query that is left times out
    # on loopback instead of reaching a real resolver.
    dead_dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead_dns.bind(("127.0.0.1", 0))
    config = _write_config(root, port, dead_dns.getsockname()[1])
    command = [
        str(RSPAMD),
        "--no-fork",
        "--config",
        str(config),
        "--var",
        f"CONFDIR={STOCK_CONFDIR}",
        "--var",
        f"LOCAL_CONFDIR={root}",
        "--var",
        f"DBDIR={root / 'db'}",
        "--var",
        f"RUNDIR={root / 'run'}",
        "--var",
        f"LOGDIR={root}",
    ]
    if os.geteuid() == 0:
        command.append("--insecure")
    output = (root / "stdout.log").open("wb")
    process = subprocess.Popen(
        command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(url):
            if process.poll() is not None:
                raise RuntimeError(
                    f"rspamd exited with {process.returncode}: see {root}/stdout.log"
                    f" and {log_path(directory)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"rspamd did not answer /ping on {url}")
            time.sleep(0.1)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        output.close()
        dead_dns.close()
