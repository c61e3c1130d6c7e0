"""The command as operators run it: exit codes, output, a bad setting."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from ..dns_server import (
    LocalDNS,
)
from ..processes import REPO, flask_cmd, server_env, start, stop, wait_until
from ..relay import PASSWORD, Relay
from .reports import (
    WRONG_PASSWORD,
)

LINE_RE = re.compile(r"^(PASS|WARN|FAIL|SKIP)  (.{14}) (.*)$")
FIX_RE = re.compile(r"^ {6} {14} fix: \S")
SUMMARY_RE = re.compile(r"^(\d+) failed, (\d+) checks$")


@dataclass
class Output:
    code: int
    stdout: str
    stderr: str
    checks: list[tuple[str, str, str]]  # (mark, name, detail)
    fixes: dict[str, str]  # check name -> its fix line


def parse(proc: subprocess.CompletedProcess) -> Output:
    """Split the doctor's report into check lines and fix lines, strictly."""
    checks: list[tuple[str, str, str]] = []
    fixes: dict[str, str] = {}
    lines = proc.stdout.splitlines()
    assert lines[-2:-1] == [""], proc.stdout
    match = SUMMARY_RE.match(lines[-1])
    assert match, proc.stdout
    for line in lines[:-2]:
        if found := LINE_RE.match(line):
            mark, name, detail = found.groups()
            checks.append((mark, name.rstrip(), detail))
        else:
            assert FIX_RE.match(line), f"unexpected line {line!r}"
            assert checks and checks[-1][0] in ("WARN", "FAIL"), line
            fixes[checks[-1][1]] = line.split("fix: ", 1)[1]
    failed, total = map(int, match.groups())
    assert total == len(checks)
    assert failed == sum(mark == "FAIL" for mark, _, _ in checks)
    # Every failure carries its fix on the line below it.
    for mark, name, _ in checks:
        if mark == "FAIL":
            assert name in fixes, f"FAIL {name} without a fix line"
    return Output(proc.returncode, proc.stdout, proc.stderr, checks, fixes)


def run_command(
    env: dict[str, str], local_dns: LocalDNS, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        flask_cmd(
            "doctor", "--dns-server", f"127.0.0.1:{local_dns.port}", "--timeout", "3"
        )
        + list(args),
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def command_env(tmp_path) -> Callable[..., dict[str, str]]:
    """The subprocess environment: no inherited mail settings, a tmp ledger."""

    def factory(relay: Relay, **overrides: str) -> dict[str, str]:
        env = server_env(tmp_path / "instance")
        env.update(relay.env(DATABASE_URL=f"sqlite:///{tmp_path}/cli.db", **overrides))
        return env

    return factory


@pytest.mark.slow
def test_command_exits_0_when_nothing_fails(relay, make_dns, command_env, dkim_env):
    server = make_dns(dmarc=False)  # a warning does not fail the run
    proc = run_command(command_env(relay, **dkim_env), server)

    out = parse(proc)
    assert out.code == 0, proc.stdout + proc.stderr
    assert [mark for mark, _, _ in out.checks].count("WARN") == 1
    assert ("WARN", "dmarc") in [(mark, name) for mark, name, _ in out.checks]
    assert "v=DMARC1" in out.fixes["dmarc"]
    assert {name for mark, name, _ in out.checks if mark == "PASS"} >= {
        "configuration",
        "auth",
        "rcpt sales",
        "dkim",
    }
    assert out.stdout.endswith("\n0 failed, 17 checks\n")
    assert PASSWORD not in proc.stdout + proc.stderr
    assert relay.received == []


@pytest.mark.slow
def test_command_exits_1_on_a_failure(relay, local_dns, command_env):
    proc = run_command(command_env(relay, SMTP_PASSWORD=WRONG_PASSWORD), local_dns)

    out = parse(proc)
    assert out.code == 1, proc.stdout + proc.stderr
    assert [(m, n) for m, n, _ in out.checks if m == "FAIL"] == [("FAIL", "auth")]
    (detail,) = [d for m, n, d in out.checks if n == "auth"]
    assert detail.startswith("refused: 535")
    assert "SMTP_PASSWORD" in out.fixes["auth"]
    assert "1 failed" in out.stdout
    for secret in (WRONG_PASSWORD, PASSWORD):
        assert secret not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_command_with_a_bad_setting(relay, local_dns, command_env):
    proc = run_command(command_env(relay, SMTP_PORT="abc"), local_dns)

    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "SMTP_PORT must be a whole number, got 'abc'" in output
    assert "PASS" not in proc.stdout


@pytest.mark.slow
def test_command_reports_a_bad_setting_as_a_check(relay, local_dns, command_env):
    proc = run_command(command_env(relay, SMTP_PORT="abc"), local_dns)

    output = proc.stdout + proc.stderr
    assert proc.returncode == 78  # EX_CONFIG
    assert "Traceback" not in output
    assert re.search(r"^FAIL  configuration .*SMTP_PORT", output, re.MULTILINE)
    assert "fix:" in output


@pytest.mark.slow
def test_command_send_test_through_the_real_worker(
    relay, local_dns, command_env, tmp_path
):
    env = command_env(relay)
    worker_log = tmp_path / "worker.log"
    worker = start(flask_cmd("worker"), env, worker_log)
    try:
        # Let the worker create the database first: two processes starting
        # at once on a new SQLite file can fail "database is locked".
        wait_until(
            lambda: "delivering through" in worker_log.read_text(errors="replace"),
            20,
            "the worker to start",
        )
        proc = run_command(env, local_dns, "--send-test", "sales", "--wait", "30")
    finally:
        stop(worker)

    out = parse(proc)
    logs = proc.stdout + proc.stderr + worker_log.read_text(errors="replace")
    assert out.code == 0, logs
    mark, name, detail = out.checks[-1]
    assert (mark, name) == ("PASS", "send test"), logs
    assert re.match(r"receipt \S+: 250", detail)
    # Sent means the relay answered 250 to DATA: the message is there.
    (got,) = relay.received
    assert got.message["Subject"] == "Formpost test message"
    assert got.rcpt_tos == ["sales@example.com"]
