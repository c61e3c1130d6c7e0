"""The doctor's notification checks: each webhook's address, stuck deliveries."""

from __future__ import annotations

from app.doctor import FAIL, PASS, WARN

from ..helpers import ledger_of
from ..notifykit import SECRET
from .reports import assert_fix, check, run_doctor

HOOK = "http://127.0.0.1:9/hook"  # never called: the doctor only resolves


def app_with_webhook(make_app, tmp_path, **env: str):
    forms = tmp_path / "forms.toml"
    forms.write_text(
        '[forms.contact]\nrecipients = ["demo"]\n'
        f'notify = ["email", "webhook:{HOOK}"]\n'
        f'[forms.contact.webhooks."{HOOK}"]\nsecret = "{SECRET}"\n'
    )
    return make_app({"FORMS_FILE": str(forms), **env})


def test_a_webhook_to_a_refused_address_fails(make_app, tmp_path, local_dns):
    app = app_with_webhook(make_app, tmp_path)
    found = check(run_doctor(app, local_dns.resolver()), "webhook")
    assert found.status == FAIL
    assert "127.0.0.1" in found.detail and "loopback" in found.detail
    assert "/hook" not in found.detail  # scheme and host only
    assert_fix(found, "WEBHOOK_ALLOW_PRIVATE")


def test_a_webhook_allowed_to_a_private_address_passes(make_app, tmp_path, local_dns):
    app = app_with_webhook(make_app, tmp_path, WEBHOOK_ALLOW_PRIVATE="true")
    found = check(run_doctor(app, local_dns.resolver()), "webhook")
    assert found.status == PASS


def test_failed_and_disabled_deliveries_are_reported(make_app, tmp_path, local_dns):
    app = app_with_webhook(make_app, tmp_path, WEBHOOK_ALLOW_PRIVATE="true")
    ledger = ledger_of(app)
    with ledger.engine.begin() as conn:
        for n, state in enumerate(("failed", "disabled", "sent")):
            conn.exec_driver_sql(
                "INSERT INTO deliveries (submission_id, kind, target, label, state,"
                " attempts, created_at, queued_at, next_attempt_at, webhook_id)"
                f" VALUES ({n}, 'webhook', 't{n}', 'x', '{state}', 1, 0, 0, 0, 'm')"
            )
    found = check(run_doctor(app, local_dns.resolver()), "notifications")
    assert found.status == WARN
    assert found.detail.startswith("1 failed, 1 disabled")
    assert_fix(found, "outbox deliveries")


def test_email_only_adds_no_check(make_app, local_dns):
    report = run_doctor(make_app(), local_dns.resolver())
    names = {c.name for c in report.checks}
    assert "webhook" not in names and "notifications" not in names
