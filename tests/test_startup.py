"""A bad setting stops every documented way of starting Formpost, once, cleanly.

Real processes: gunicorn, honcho with the Procfile, the flask commands, and
the exact command lines the Dockerfile, compose.yaml and the systemd units
run (read from those files; no Docker engine or systemd runs here).
"""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from configparser import ConfigParser
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .helpers import PG_URL, postgres_or_skip
from .processes import REPO, server_env, start, stop, wait_for_port

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
# Start-up takes about half a second; a loop would never end by itself.
STOPS_WITHIN = 15.0
EXIT_CONFIG = 78
EXIT_UNAVAILABLE = 69
RELAY_WITHOUT_SECRET = {
    "SMTP_HOST": "127.0.0.1",
    "MAIL_FROM": "Forms <forms@example.com>",
    "MAIL_RECIPIENTS": "team@example.com",
}
BAD_SETTINGS = {
    "port": ({"SMTP_PORT": "abc"}, "SMTP_PORT must be a whole number"),
    "security": ({"SMTP_SECURITY": "maybe"}, "SMTP_SECURITY must be one of"),
    "no secret": (RELAY_WITHOUT_SECRET, "SECRET_KEY (or SECRET_KEY_FILE) is required"),
}


@dataclass
class Ended:
    """A process that ran to its end: status, output and how long it took."""

    status: int
    output: str
    seconds: float

    def fail_lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if "FAIL  " in line]


def env_for(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = server_env(tmp_path / "instance")
    env.update(BIND="127.0.0.1:0", WEB_CONCURRENCY="2", PATH=f"{BIN}:{env['PATH']}")
    env.update(settings)
    return env


def run(argv: list[str], env: dict[str, str], tmp_path: Path) -> Ended:
    """Run `argv` in the repository until it ends (killed after a minute)."""
    log_path = tmp_path / f"run-{time.monotonic_ns()}.log"
    began = time.monotonic()
    proc = start(argv, env, log_path)
    try:
        status = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        stop(proc)
        status = -1
    return Ended(status, log_path.read_text(errors="replace"), time.monotonic() - began)


def local(argv: list[str]) -> list[str]:
    """The deployed program path (/opt/formpost/.venv/bin/x, or x) mapped to ours."""
    return [str(BIN / Path(argv[0]).name), *argv[1:]]


def procfile() -> dict[str, list[str]]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return {
        role: shlex.split(command)
        for role, _, command in (line.partition(": ") for line in lines)
        if command
    }


def dockerfile_command() -> list[str]:
    """ENTRYPOINT + CMD of the image, both in exec form."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, list[str]] = {"ENTRYPOINT": [], "CMD": []}
    for line in text.splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword in found:
            found[keyword] = json.loads(rest)
    return found["ENTRYPOINT"] + found["CMD"]


def compose_commands() -> dict[str, list[str]]:
    """Each Formpost service's command in compose.yaml (the image's when unset)."""
    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    return {
        name: service.get("command") or dockerfile_command()
        for name, service in services.items()
        if service.get("build") or service.get("image", "").startswith("formpost")
    }


def unit(name: str) -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(REPO / "deploy" / "systemd" / name)
    return parser


def unit_commands() -> dict[str, list[str]]:
    return {
        name: shlex.split(unit(name)["Service"]["ExecStart"])
        for name in ("formpost-web.service", "formpost-worker.service")
    }


def documented_commands() -> dict[str, list[str]]:
    """Every command line the repository documents for the web and the worker."""
    commands = {f"Procfile {r}": argv for r, argv in procfile().items()}
    commands["Dockerfile CMD"] = dockerfile_command()
    commands.update({f"compose {n}": argv for n, argv in compose_commands().items()})
    commands.update({f"systemd {n}": argv for n, argv in unit_commands().items()})
    return commands


def test_every_documented_command_is_found():
    commands = documented_commands()
    assert commands["Procfile web"] == ["gunicorn", "wsgi:app"]
    assert commands["Procfile worker"] == ["flask", "--app", "wsgi", "worker"]
    assert {
        "Procfile web",
        "Procfile worker",
        "Dockerfile CMD",
        "compose web",
        "compose worker",
        "systemd formpost-web.service",
        "systemd formpost-worker.service",
    } <= set(commands)
    # The image (and compose's web, which runs it) starts the Procfile's web
    # line behind nginx: deploy/docker/web.py.
    image_web = ["python", "deploy/docker/web.py"]
    assert commands["Dockerfile CMD"] == image_web
    for argv in commands.values():
        assert argv == image_web or Path(argv[0]).name in ("gunicorn", "flask")


@pytest.mark.parametrize("setting", list(BAD_SETTINGS))
@pytest.mark.parametrize("where", list(documented_commands()))
def test_a_bad_setting_stops_each_documented_command_once(tmp_path, where, setting):
    env_settings, message = BAD_SETTINGS[setting]
    argv = local(documented_commands()[where])

    ended = run(argv, env_for(tmp_path, **env_settings), tmp_path)

    assert ended.status == EXIT_CONFIG, ended.output
    assert ended.seconds < STOPS_WITHIN
    assert len(ended.fail_lines()) == 1, ended.output
    assert message in ended.fail_lines()[0]
    assert "Traceback" not in ended.output
    assert "Booting worker" not in ended.output  # the master stopped first


def test_honcho_with_the_procfile_stops(tmp_path):
    ended = run(
        [str(BIN / "honcho"), "start", "-f", "Procfile"],
        env_for(tmp_path, SMTP_PORT="abc"),
        tmp_path,
    )

    assert ended.status == EXIT_CONFIG, ended.output
    assert ended.seconds < STOPS_WITHIN
    names = [line.split("|")[0].split()[-1] for line in ended.fail_lines()]
    # Each process says it at most once (no reboot loop); whichever reads
    # the configuration first stops honcho, whose SIGTERM may reach the other
    # before it has printed its own line (seen under load).
    assert names, ended.output
    assert names.count("web.1") <= 1, ended.output
    assert names.count("worker.1") <= 1, ended.output
    assert "Traceback" not in ended.output


@pytest.mark.parametrize("name", ["formpost-web.service", "formpost-worker.service"])
def test_systemd_does_not_restart_a_bad_setting(name):
    service = unit(name)["Service"]
    assert service["Restart"] in ("on-failure", "always")  # but not for this
    assert str(EXIT_CONFIG) in service["RestartPreventExitStatus"].split()


def test_a_good_setting_still_starts(tmp_path):
    log_path = tmp_path / "gunicorn.log"
    proc = start([str(BIN / "gunicorn"), "wsgi:app"], env_for(tmp_path), log_path)
    try:
        wait_for_port(proc, log_path)
    finally:
        stop(proc)
    assert "FAIL" not in log_path.read_text()


def test_a_reload_that_reads_a_bad_forms_file_halts_instead_of_looping(tmp_path):
    forms = tmp_path / "forms.toml"
    forms.write_text('[forms.site]\nrecipients = ["demo"]\n')
    log_path = tmp_path / "gunicorn.log"
    proc = start(
        [str(BIN / "gunicorn"), "wsgi:app"],
        env_for(tmp_path, FORMS_FILE=str(forms)),
        log_path,
    )
    try:
        wait_for_port(proc, log_path)
        forms.write_text("[forms.site\n")
        proc.send_signal(signal.SIGHUP)  # new workers read the changed file
        status = proc.wait(timeout=STOPS_WITHIN)
    finally:
        stop(proc)
    output = log_path.read_text()
    assert status == 3, output  # gunicorn's "Worker failed to boot."
    assert "FORMS_FILE" in output
    assert "Traceback" not in output


# -- start-up problems other than a malformed value ---------------------------


def _silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (a dead peer)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stopping.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stopping.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    yield from _silent_port()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _problems(tmp_path: Path, silent_port: int) -> dict[str, tuple[dict, str, int]]:
    """Each problem: its settings, what its one line must name, the exit status."""
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[forms.site\n")
    unknown_key = tmp_path / "unknown-key.toml"
    unknown_key.write_text('[forms.site]\nrecipients = ["demo"]\ncolour = "red"\n')
    unknown_alias = tmp_path / "unknown-alias.toml"
    unknown_alias.write_text('[forms.site]\nrecipients = ["nobody"]\n')
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("this is not a certificate\n")
    bad_key = tmp_path / "dkim.pem"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    # A file where a folder should be: unwritable even for root.
    unwritable = tmp_path / "a-file"
    unwritable.write_text("")
    pg = PG_URL.rsplit("/", 1)[0]
    return {
        "forms bad toml": ({"FORMS_FILE": str(bad_toml)}, "FORMS_FILE", EXIT_CONFIG),
        "forms unknown key": (
            {"FORMS_FILE": str(unknown_key)},
            "unknown key(s) ['colour']",
            EXIT_CONFIG,
        ),
        "forms unknown alias": (
            {"FORMS_FILE": str(unknown_alias)},
            "'nobody' is not an alias in MAIL_RECIPIENTS",
            EXIT_CONFIG,
        ),
        "sqlite missing folder": (
            {"DATABASE_URL": f"sqlite:///{tmp_path}/missing/formpost.db"},
            "DATABASE_URL: the folder",
            EXIT_CONFIG,
        ),
        "sqlite in memory": (
            {"DATABASE_URL": "sqlite:///:memory:"},
            "DATABASE_URL points at an in-memory SQLite database",
            EXIT_CONFIG,
        ),
        "malformed url": (
            {"DATABASE_URL": "postgresql://user:secret@[db/formpost"},
            "DATABASE_URL names no valid host",
            EXIT_CONFIG,
        ),
        "malformed port": (
            {"DATABASE_URL": "postgresql://user:secret@db:port/formpost"},
            "DATABASE_URL is not a valid URL",
            EXIT_CONFIG,
        ),
        "postgres refused": (
            {"DATABASE_URL": f"postgresql://127.0.0.1:{_closed_port()}/test"},
            "Connection refused",
            EXIT_UNAVAILABLE,
        ),
        "postgres silent": (
            {"DATABASE_URL": f"postgresql://127.0.0.1:{silent_port}/test"},
            "timeout",
            EXIT_UNAVAILABLE,
        ),
        "postgres missing database": (
            {"DATABASE_URL": f"{pg}/formpost_no_such_database"},
            'database "formpost_no_such_database" does not exist',
            EXIT_UNAVAILABLE,
        ),
        "instance unwritable": (
            {"INSTANCE_PATH": str(unwritable / "instance")},
            "cannot write to the instance folder",
            EXIT_CONFIG,
        ),
        "dkim key malformed": (
            {
                # Development mode sends as formpost@example.com.
                "DKIM_DOMAIN": "example.com",
                "DKIM_SELECTOR": "mail",
                "DKIM_PRIVATE_KEY_FILE": str(bad_key),
            },
            "DKIM_PRIVATE_KEY_FILE: the DKIM key cannot sign",
            EXIT_CONFIG,
        ),
        "ca file not pem": (
            {"SMTP_CA_FILE": str(not_pem)},
            "SMTP_CA_FILE does not hold PEM CA certificates",
            EXIT_CONFIG,
        ),
    }


PROBLEMS = [
    "forms bad toml",
    "forms unknown key",
    "forms unknown alias",
    "sqlite missing folder",
    "sqlite in memory",
    "malformed url",
    "malformed port",
    "postgres refused",
    "postgres silent",
    "postgres missing database",
    "instance unwritable",
    "ca file not pem",
    "dkim key malformed",
]
COMMANDS = {
    "doctor": ["flask", "--app", "wsgi", "doctor", "--timeout", "2"],
    "worker": ["flask", "--app", "wsgi", "worker"],
    "gunicorn": ["gunicorn", "wsgi:app"],
}


def test_the_problem_list_is_complete(tmp_path):
    assert sorted(_problems(tmp_path, 1)) == sorted(PROBLEMS)


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("problem", PROBLEMS)
def test_a_start_up_problem_is_one_clear_line(tmp_path, silent_port, problem, command):
    if problem.startswith("postgres"):
        postgres_or_skip()
    settings, named, status = _problems(tmp_path, silent_port)[problem]

    ended = run(local(COMMANDS[command]), env_for(tmp_path, **settings), tmp_path)

    assert ended.status == status, ended.output
    assert ended.seconds < STOPS_WITHIN  # a silent database: the connect timeout
    (line,) = ended.fail_lines()
    assert named in line, ended.output
    assert "Traceback" not in ended.output
    assert "secret" not in ended.output  # a URL's password is never echoed
    assert "Background on this error" not in ended.output
