"""The files that ship Formpost: image recipe, pins and documented settings.

No Docker engine runs on CI machines, so the image is checked by reading its
recipe: what a reviewer would look for, mechanically.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from dotenv import dotenv_values

from config import load_config

ROOT = Path(__file__).resolve().parent.parent


def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def test_image_uses_a_pinned_slim_base():
    (base,) = [rest for kw, rest in dockerfile() if kw == "FROM"]
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", base), base


def test_image_runs_as_non_root_with_exec_form_gunicorn():
    rows = dockerfile()
    users = [rest for kw, rest in rows if kw == "USER"]
    assert users and users[-1] not in ("root", "0")
    (cmd,) = [rest for kw, rest in rows if kw == "CMD"]
    argv = json.loads(cmd)  # exec form: a JSON array, so signals reach it
    # nginx in front of the Procfile's web line, which stays the one source
    # (tests/test_idle_connections.py runs this command).
    assert argv == ["python", "deploy/docker/web.py"]
    script = (ROOT / "deploy" / "docker" / "web.py").read_text()
    assert '"Procfile"' in script and "web_command()" in script


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_procfile_has_web_and_worker():
    roles = procfile()
    assert set(roles) == {"web", "worker"}
    assert roles["web"].startswith("gunicorn ") and roles["web"].endswith("wsgi:app")
    assert roles["worker"] == "flask --app wsgi worker"


def test_image_caches_requirements_before_code_and_checks_health():
    rows = dockerfile()
    copies = [rest for kw, rest in rows if kw == "COPY"]
    assert copies[0].startswith("requirements.txt")
    install = next(i for i, (kw, rest) in enumerate(rows) if "pip install" in rest)
    first_code = next(i for i, (kw, rest) in enumerate(rows) if "app/" in rest)
    assert install < first_code
    envs = " ".join(rest for kw, rest in rows if kw == "ENV")
    assert "PYTHONUNBUFFERED=1" in envs
    (health,) = [rest for kw, rest in rows if kw == "HEALTHCHECK"]
    assert "/healthz" in health


def test_every_copied_path_exists():
    for kw, rest in dockerfile():
        if kw == "COPY":
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source


def test_requirements_are_pinned_exactly():
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-r"):
                assert re.fullmatch(r"[A-Za-z0-9_.\[\]-]+==[\w.]+", line), line


def test_env_example_is_a_valid_configuration():
    values = {k: v or "" for k, v in dotenv_values(ROOT / ".env.example").items()}
    cfg = load_config(values)
    assert cfg["DEVELOPMENT"] is True  # copying it unchanged is safe: no relay


def test_every_setting_is_documented():
    names = set(
        re.findall(r'env\.\w+\(\s*"([A-Z_]+)"', (ROOT / "config.py").read_text())
    )
    assert "SMTP_HOST" in names and len(names) > 10
    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in names:
        assert name in example, f"{name} missing from .env.example"
        assert name in readme, f"{name} missing from README.md"


def test_compose_file_runs_both_roles_with_health_checks_and_secret_files():
    """No Docker engine here: check compose.yaml's structure instead."""
    import yaml

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    web, worker, db = services["web"], services["worker"], services["db"]
    assert worker["command"] == procfile()["worker"].split()
    for service in (web, worker):
        assert "formpost-data:/data" in service["volumes"]
        assert service["healthcheck"]["test"]
        env = service["environment"]
        assert env["SECRET_KEY_FILE"].startswith("/run/secrets/")
        assert env["SMTP_PASSWORD_FILE"].startswith("/run/secrets/")
        assert set(service["secrets"]) <= set(compose["secrets"])
    assert "/healthz" in " ".join(web["healthcheck"]["test"])
    assert db["profiles"] == ["postgres"]
    assert web["ports"] == ["127.0.0.1:8000:8000"]  # only the proxy faces out


def test_systemd_units_run_the_procfile_roles():
    units = ROOT / "deploy" / "systemd"
    web = (units / "formpost-web.service").read_text()
    worker = (units / "formpost-worker.service").read_text()
    assert "gunicorn wsgi:app" in web
    assert "flask --app wsgi worker" in worker
    for unit in (web, worker):
        assert "User=formpost" in unit
        assert "SECRET_KEY_FILE=%d/secret_key" in unit
        assert "SMTP_PASSWORD=" not in unit  # secrets only as credentials
    timer = (units / "formpost-purge.timer").read_text()
    assert "OnCalendar=daily" in timer


def test_gunicorn_settings_follow_the_machine_and_the_proxy_rule():
    namespace: dict = {}
    exec((ROOT / "gunicorn.conf.py").read_text(), namespace)  # noqa: S102
    assert namespace["workers"] >= 2
    # Threads, so that posts arriving together share one commit.
    assert namespace["worker_class"] == "gthread"
    assert namespace["threads"] >= 2
    assert namespace["forwarded_allow_ips"] == ""  # ProxyFix is the one authority
    assert namespace["secure_scheme_headers"] == {}
    assert "x-request-id" in namespace["access_log_format"]


@pytest.mark.parametrize(
    ("variable", "value"), [("WEB_THREADS", "eight"), ("WEB_CONCURRENCY", "0")]
)
def test_gunicorn_refuses_a_bad_count_naming_it(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit, match=f"{variable} must be a whole number"):
        exec((ROOT / "gunicorn.conf.py").read_text(), {})  # noqa: S102


def test_gunicorn_counts_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("WEB_THREADS", "4")
    namespace: dict = {}
    exec((ROOT / "gunicorn.conf.py").read_text(), namespace)  # noqa: S102
    assert (namespace["workers"], namespace["threads"]) == (3, 4)
