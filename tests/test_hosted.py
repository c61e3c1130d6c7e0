"""The hosted form end to end: request in, real SMTP relay out."""

from __future__ import annotations

import html
import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from .helpers import (
    CSRF_RE,
    FORM_TOKEN_RE,
    csrf_token,
    deliver,
    ledger_of,
    post_form,
    use_fake_clock,
)

ONE_RECIPIENT = {"MAIL_RECIPIENTS": "team=team@example.com"}


def test_page_offers_the_configured_aliases(client):
    page = client.get("/").get_data(as_text=True)
    assert '<label for="recipient">Recipient' in page
    assert '<option value="sales">sales</option>' in page
    assert '<option value="support">support</option>' in page
    # The real addresses never reach the visitor.
    assert "sales@example.com" not in page
    assert "help@example.org" not in page
    for label in ("Your name", "Your email", "Subject", "Message"):
        assert label in page


def test_single_recipient_is_hidden(make_app, relay):
    app = make_app(relay.env(**ONE_RECIPIENT))
    client = app.test_client()
    page = client.get("/").get_data(as_text=True)
    assert "<select" not in page
    assert '<input type="hidden" name="recipient" value="team">' in page
    assert "team@example.com" not in page
    response = post_form(client, recipient="team")
    assert response.status_code == 303
    deliver(app)
    assert relay.received[0].rcpt_tos == ["team@example.com"]


def test_single_recipient_post_without_the_field_still_goes_there(make_app, relay):
    app = make_app(relay.env(**ONE_RECIPIENT))
    client = app.test_client()
    token = csrf_token(client)
    response = client.post(
        "/", data={"csrf_token": token, "subject": "Hi", "message": "Body"}
    )
    assert response.status_code == 303
    deliver(app)
    assert relay.received[0].rcpt_tos == ["team@example.com"]


def test_valid_post_is_stored_redirected_303_then_delivered(app, client, relay):
    response = post_form(client, recipient="support")
    assert response.status_code == 303
    assert response.headers["Location"] == "/thanks"
    assert relay.received == []  # the request path never talks SMTP
    assert deliver(app) == 1
    (got,) = relay.received
    assert got.mail_from == "forms@formpost.test"
    assert got.rcpt_tos == ["help@example.org"]
    msg = got.message
    assert msg["From"] == "Contact form <forms@formpost.test>"
    assert msg["To"] == "help@example.org"
    assert msg["Reply-To"] == "Ada Lovelace <ada@example.net>"
    assert msg["Subject"] == "Hello"
    assert msg["Message-ID"].endswith("@formpost.test>")
    assert msg.get_body(("plain",)).get_content() == (
        "From: Ada Lovelace <ada@example.net>\n\nA question about engines.\n"
    )
    thanks = client.get("/thanks")
    assert thanks.status_code == 200
    page = thanks.get_data(as_text=True)
    assert "Thank you" in page
    (row,) = app.extensions["formpost"].ledger.rows()
    assert row.state == "sent" and row.message_id == msg["Message-ID"]
    assert f"<strong>{row.receipt}</strong>" in page


def test_without_email_there_is_no_reply_to(app, client, relay):
    assert post_form(client, email="", name="").status_code == 303
    deliver(app)
    assert "Reply-To" not in relay.received[0].message


def test_browser_crlf_is_kept_as_line_breaks(app, client, relay):
    assert post_form(client, message="line one\r\nline two\r\n").status_code == 303
    deliver(app)
    body = relay.received[0].message.get_body(("plain",)).get_content()
    assert body.endswith("\n\nline one\nline two\n")


BAD_INPUT = [
    # field, value, what the visitor is told
    ("subject", "", "Enter a subject"),
    ("subject", "   ", "Enter a subject"),
    ("subject", "x" * 201, "under 200"),
    ("subject", "Hi\r\nBcc: victim@example.com", "single line"),
    ("subject", "Hi\nBcc: victim@example.com", "single line"),
    ("subject", "Hi\rBcc: victim@example.com", "single line"),
    ("subject", "nul\x00byte", "single line"),
    ("subject", "tab\there", "single line"),
    ("subject", "c1\x85next", "single line"),
    ("subject", "sep\u2028arator", "single line"),
    # Python's email package would decode these into a real CRLF + header.
    ("subject", "=?utf-8?q?a=0D=0ABcc:_victim@example.com?=", "encoded-word"),
    ("name", "=?utf-8?q?a=0D=0ABcc:_victim@example.com?=", "encoded-word"),
    ("name", "n" * 101, "under 100"),
    ("name", "Eve\r\nBcc: victim@example.com", "single line"),
    ("name", "Eve\x00", "single line"),
    ("email", "not-an-email", "like name@example.com"),
    ("email", "eve@example.com\r\nBcc: victim@example.com", "single line"),
    ("email", "eve@example.com\nCc: victim@example.com", "single line"),
    ("email", "eve@example.com, victim@example.com", "like name@example.com"),
    ("email", "Eve <eve@example.com>", "like name@example.com"),
    ("message", "", "Enter a message"),
    ("message", "m" * 20_001, "under 20,000"),
    ("message", "binary\x00data", "control characters"),
    ("recipient", "sales@example.com", "listed recipients"),
    ("recipient", "victim@example.com", "listed recipients"),
    ("recipient", "ceo", "listed recipients"),
    ("recipient", "", "listed recipients"),
]


@pytest.mark.parametrize(("field", "value", "error"), BAD_INPUT)
def test_bad_input_is_400_with_input_kept_and_nothing_sent(
    app, client, relay, field, value, error
):
    response = post_form(client, **{"message": "My text, kept", field: value})
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert error in page
    assert 'role="alert"' in page
    assert 'aria-invalid="true"' in page
    if field != "message":
        assert "My text, kept" in page  # the visitor's input survives
    assert app.extensions["formpost"].ledger.rows() == []  # nothing stored
    deliver(app)
    assert relay.received == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("subject", "s" * 200), ("message", "m" * 20_000), ("name", "n" * 100)],
)
def test_limits_are_inclusive(app, client, relay, field, value):
    assert post_form(client, **{field: value}).status_code == 303
    deliver(app)
    assert len(relay.received) == 1


def test_missing_csrf_token_is_400_and_keeps_input(client, relay):
    response = post_form(client, token="", message="Please keep me")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "expired" in page
    assert "Please keep me" in page
    # A fresh token is in the re-rendered form, so a second try works.
    assert 'name="csrf_token"' in page
    assert relay.received == []


def test_oversized_body_is_413_with_a_readable_page(make_app, relay):
    client = make_app(relay.env(MAX_CONTENT_LENGTH="4096")).test_client()
    response = post_form(client, message="x" * 5000)
    assert response.status_code == 413
    page = response.get_data(as_text=True)
    assert "larger than 4 kB" in page
    assert "<html" in page
    assert relay.received == []


def test_default_size_limit_is_64_kib(app):
    assert app.config["MAX_CONTENT_LENGTH"] == 64 * 1024


def test_relay_down_at_submit_still_thanks_the_visitor(make_app, relay):
    """Storing is what counts: the relay's state never reaches the request."""
    relay.stop()
    client = make_app(relay.env()).test_client()
    response = post_form(client, subject="Urgent", message="Do not lose me")
    assert response.status_code == 303


def test_failing_commit_is_503_with_input_kept_and_nothing_sent(app, client, relay):
    """A real failure inside the database (a trigger aborts the INSERT)."""
    engine = app.extensions["formpost"].ledger.engine
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON submissions "
            "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    response = post_form(client, subject="Urgent", message="Do not lose me")
    page = response.get_data(as_text=True)
    assert response.status_code == 503
    assert "could not be sent" in page
    assert "Do not lose me" in page and 'value="Urgent"' in page
    assert "disk full" not in page
    assert app.extensions["formpost"].ledger.rows() == []
    assert deliver(app) == 0
    assert relay.received == []


def test_double_post_of_one_rendered_form_is_one_submission(app, client, relay):
    """Double click, reload or back-and-resubmit: the same page posted twice."""
    token = csrf_token(client)
    page = client.get("/").get_data(as_text=True)
    form_token = re.search(r'name="form_token" type="hidden" value="([^"]+)"', page)
    data = {
        "csrf_token": token,
        "form_token": form_token.group(1),
        "recipient": "sales",
        "subject": "Once",
        "message": "Only once, please",
    }
    first = client.post("/", data=data)
    first_receipt = client.get("/thanks").get_data(as_text=True)
    second = client.post("/", data=data)
    second_receipt = client.get("/thanks").get_data(as_text=True)
    assert first.status_code == second.status_code == 303
    assert first_receipt == second_receipt  # the same receipt both times
    assert len(app.extensions["formpost"].ledger.rows()) == 1
    deliver(app)
    assert len(relay.received) == 1


def test_each_rendered_form_is_its_own_submission(app, client, relay):
    assert post_form(client, subject="One").status_code == 303
    assert post_form(client, subject="Two").status_code == 303
    deliver(app)
    assert sorted(r.message["Subject"] for r in relay.received) == ["One", "Two"]


def test_escaping_reaches_the_html_part(app, client, relay):
    evil = '<script>alert("x")</script> & <b>bold</b>'
    assert post_form(client, message=evil, name="<i>Eve</i>").status_code == 303
    deliver(app)
    msg = relay.received[0].message
    text = msg.get_body(("plain",)).get_content()
    html_part = msg.get_body(("html",)).get_content()
    # The text part is exactly as typed, under who wrote it.
    assert text == "From: <i>Eve</i> <ada@example.net>\n\n" + evil + "\n"
    assert "<script>" not in html_part and "<i>Eve" not in html_part
    assert "&lt;script&gt;" in html_part
    assert "&lt;i&gt;Eve&lt;/i&gt;" in html_part


def test_unicode_round_trip(app, client, relay):
    subject = "你好 👋 Ünïcödé café"
    name = "Zoë 张伟 👩‍💻"
    body = "Grüße aus Köln\n中文内容 🚀\nÉmoji: 👍🏽"
    assert (
        post_form(client, subject=subject, name=name, message=body).status_code == 303
    )
    deliver(app)
    msg = relay.received[0].message
    assert msg["Subject"] == subject
    assert msg["Reply-To"].addresses[0].display_name == name
    assert msg.get_body(("plain",)).get_content() == (
        f"From: {name} <ada@example.net>\n\n{body}\n"
    )
    assert html.escape("中文内容 🚀") in msg.get_body(("html",)).get_content()


def test_rerender_escapes_what_was_typed(client, relay):
    response = post_form(client, subject="", message="</textarea><script>x</script>")
    page = response.get_data(as_text=True)
    assert "<script>x</script>" not in page
    assert "&lt;/textarea&gt;&lt;script&gt;" in page


# Pieces an attacker would combine: line breaks, NUL, other controls, Unicode
# separators, and text that looks like extra headers.
_PIECES = [
    *"abc xyz:<>@,;\"'\\",
    *["\r", "\n", "\r\n", "\x00", "\t", "\x0b", "\x1b", "\u2028", "\x85"],
    *["é", "中", "👋", "Bcc: v@evil.test", "To: v@evil.test", "=?utf-8?q?x?="],
]
header_text = st.lists(st.sampled_from(_PIECES), max_size=12).map("".join)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    subject=header_text,
    name=header_text,
    email=st.one_of(
        st.just(""),
        st.just("ada@example.net"),
        header_text.map(lambda s: "ada@example.net" + s),
    ),
    recipient=st.sampled_from(["sales", "support", "evil@evil.test", "sales\r\n"]),
)
def test_no_header_injection_property(
    app, client, relay, subject, name, email, recipient
):
    """For any input: either 400 and nothing sent, or exactly one safe message."""
    before = len(relay.received)
    response = post_form(
        client, subject=subject, name=name, email=email, recipient=recipient
    )
    deliver(app)
    after = relay.received[before:]
    event(f"status {response.status_code}")
    if response.status_code != 303:
        assert response.status_code == 400
        assert after == []
        return
    (got,) = after
    msg = got.message
    assert got.mail_from == "forms@formpost.test"
    assert set(got.rcpt_tos) <= {"sales@example.com", "help@example.org"}
    assert len(got.rcpt_tos) == 1
    assert len(msg.get_all("From")) == 1 and len(msg.get_all("To")) == 1
    assert msg["From"].addresses[0].addr_spec == "forms@formpost.test"
    assert msg.get_all("Cc") is None and msg.get_all("Bcc") is None
    assert len(msg.get_all("Subject")) == 1
    assert len(msg.get_all("Reply-To") or []) <= 1
    assert msg["Subject"] == subject.strip()


# -- the hosted form's own spam checks ---------------------------------------


def test_hosted_honeypot_is_answered_like_success(app, client, relay):
    response = post_form(client, website="https://spam.example")
    assert response.status_code == 303
    assert response.headers["Location"] == "/thanks"
    assert client.get("/thanks").status_code == 200
    # Kept as dropped with the reason (an owner may release a false drop),
    # nothing delivered.
    (row,) = ledger_of(app).rows()
    assert row.state == "dropped" and row.message and row.subject
    assert '"rule":"honeypot"' in row.verdict
    assert deliver(app) == 0
    assert relay.received == []


def test_hosted_honeypot_on_a_broken_form_stores_nothing(app, client, relay):
    response = post_form(client, website="https://spam.example", recipient="x")
    assert response.status_code == 303
    assert ledger_of(app).rows() == []


def test_hosted_form_minimum_fill_time(make_app, relay):
    """The form token's age is read from the app's clock: the test moves it."""
    app = make_app(relay.env(MIN_FILL_SECONDS="2"))
    clock = use_fake_clock(app)
    client = app.test_client()
    page = client.get("/").get_data(as_text=True)
    data = {
        "csrf_token": CSRF_RE.search(page).group(1),
        "form_token": FORM_TOKEN_RE.search(page).group(1),
        "recipient": "support",
        "subject": "Hello",
        "message": "Typed remarkably fast.",
    }
    clock.advance(1)
    quick = client.post("/", data=data)
    assert quick.status_code == 400
    text = quick.get_data(as_text=True)
    assert "That was quick" in text and "Typed remarkably fast." in text
    assert "wait 1 more second" in text
    assert ledger_of(app).rows() == []
    clock.advance(1.5)
    later = client.post("/", data=data)
    assert later.status_code == 303
    assert later.headers["Location"] == "/thanks"
    assert deliver(app) == 1
    (got,) = relay.received
    assert got.rcpt_tos == ["help@example.org"]
