"""The console's dashboard, doctor button and forms page; every console page's headers.

Real parts throughout: the app from create_app(), its ledger on SQLite and
PostgreSQL, the aiosmtpd test relay for delivery and for the doctor.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import threading
from html import unescape

import pytest
from flask import render_template_string

from app.dashboard import (
    DAY,
    build_chart,
    counts_by_form_and_day,
    first_day,
    nice_ceiling,
)
from app.formdefs import FormDef
from app.snippets import fetch_html, plain_html, rate_text

from .consolekit import log_in, text_of, token, with_owner
from .fakeclock import FakeClock
from .helpers import (
    deliver,
    ledger_of,
    post_form,
    use_fake_clock,
)

SITE = "https://www.example.com"
HOSTILE = '"><script>alert(1)</script>'


def at(app, when: float) -> None:
    """Set the app's clock to `when`."""
    ledger_of(app).clock = FakeClock(when)


@pytest.fixture
def console(make_app, relay):
    return with_owner(make_app(relay.env(ALLOWED_ORIGINS=SITE)))


@pytest.fixture
def owner(console):
    """A client logged in to the console."""
    client = console.test_client()
    log_in(client)
    return client


def post_endpoint(client, form="default", **fields):
    data = {"email": "ada@example.net", "message": "Hi", **fields}
    response = client.post(f"/f/{form}", data=data, headers={"Origin": SITE})
    assert response.status_code in (200, 303), response.get_data(as_text=True)
    return response


# -- counts per form per day ---------------------------------------------------


def test_counts_by_form_and_day_on_both_databases(make_app, relay, database_url):
    app = make_app(relay.env(ALLOWED_ORIGINS=SITE, DATABASE_URL=database_url))
    today = 20_000  # 2024-10-04
    at(app, (today - 30) * DAY + 3600)  # 30 days ago: outside the window
    client = app.test_client()
    post_endpoint(client)
    at(app, (today - 29) * DAY)  # the window's first instant
    post_endpoint(client)
    post_form(client)  # the hosted form
    at(app, today * DAY - 0.5)  # the last half second of yesterday
    post_endpoint(client)
    post_endpoint(client)
    at(app, today * DAY + 60)
    post_form(client)
    counts = counts_by_form_and_day(30, ledger=ledger_of(app), now=today * DAY + 7200)
    assert list(counts) == ["default", "hosted"]
    assert counts["default"] == [1] + [0] * 27 + [2, 0]
    assert counts["hosted"] == [1] + [0] * 28 + [1]
    # Seven days: only what falls in the last seven.
    week = counts_by_form_and_day(7, ledger=ledger_of(app), now=today * DAY)
    assert week == {"default": [0] * 5 + [2, 0], "hosted": [0] * 6 + [1]}
    # Erasing every submission (delete, retention) leaves the counts.
    receipts = [row.receipt for row in ledger_of(app).rows(limit=100)]
    assert ledger_of(app).erase(receipts) == len(receipts)
    again = counts_by_form_and_day(30, ledger=ledger_of(app), now=today * DAY + 7200)
    assert again == counts


def test_counts_are_empty_without_submissions(console):
    ledger = ledger_of(console)
    assert counts_by_form_and_day(30, ledger=ledger, now=1_800_000_000.0) == {}


# -- the chart, as pure layout -------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ceiling"),
    [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (10, 10), (11, 20), (260, 500)],
)
def test_nice_ceiling(value, ceiling):
    assert nice_ceiling(value) == ceiling


def test_the_chart_stacks_each_days_forms_to_scale():
    counts = {"default": [0] * 28 + [3, 1], "support": [0] * 28 + [2, 0]}
    chart = build_chart(counts, dt.date(2026, 11, 3))
    plot_h = chart.height - chart.top - chart.bottom
    assert chart.days[0] == "2026-11-03" and chart.days[-1] == "2026-12-02"
    assert chart.totals[-2:] == [5, 1] and chart.total == 6
    assert [t for _, t in chart.y_ticks] == [0, 2, 5]  # 5 is the nice maximum
    day28 = [b for b in chart.bars if b.day == "Dec 01"]
    assert [(b.form, b.count) for b in day28] == [("default", 3), ("support", 2)]
    bottom = chart.top + plot_h
    assert day28[0].y + day28[0].height == pytest.approx(bottom)
    assert day28[1].y + day28[1].height == pytest.approx(day28[0].y)
    assert day28[0].height == pytest.approx(plot_h * 3 / 5)
    assert day28[0].x == day28[1].x and day28[0].color != day28[1].color
    # No bar for a zero; today has a label, and the labels go left to right.
    assert len(chart.bars) == 3
    xs = [x for x, _ in chart.x_labels]
    assert chart.x_labels[-1][1] == "Dec 02" and xs == sorted(xs)
    assert chart.legend == [
        ("default", chart.bars[0].color, 4),
        ("support", chart.bars[1].color, 2),
    ]


def test_the_window_ends_today_in_utc():
    midnight = dt.datetime(2026, 12, 2, tzinfo=dt.UTC).timestamp()
    assert first_day(midnight) == dt.date(2026, 11, 3)
    assert first_day(midnight - 1) == dt.date(2026, 11, 2)


def test_the_chart_template_escapes_every_label(console):
    chart = build_chart({HOSTILE: [1] * 30}, dt.date(2026, 11, 3))
    with console.test_request_context():
        svg = render_template_string(
            '{% from "console/_chart.html" import daily_chart %}'
            "{{ daily_chart(chart) }}",
            chart=chart,
        )
    assert "<script>" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert 'role="img"' in svg and 'aria-labelledby="chart-title chart-desc"' in svg
    assert svg.count("<rect ") == 30 + 1  # the bars and the legend's swatch


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-3, "0 s"), (59.9, "59 s"), (60, "1 min"), (3599, "59 min"),
     (3600 * 3 + 300, "3 h 5 min"), (86400 * 2 + 3600 * 4, "2 d 4 h")],
)  # fmt: skip
def test_durations_read_roughly(seconds, text):
    from app.console import duration

    assert duration(seconds) == text


# -- the dashboard -------------------------------------------------------------


def test_the_dashboard_needs_a_log_in(console):
    response = console.test_client().get("/admin/dashboard")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login")


def test_the_dashboard_shows_counts_queue_and_relay(make_app, relay, tmp_path):
    url = f"sqlite:///{tmp_path}/shared.db"
    app = with_owner(make_app(relay.env(ALLOWED_ORIGINS=SITE, DATABASE_URL=url)))
    client = app.test_client()
    for _ in range(3):
        post_endpoint(client)
    post_form(client)
    assert deliver(app) == 4  # the relay works
    owner = app.test_client()
    log_in(owner)
    page = owner.get("/admin/dashboard").get_data(as_text=True)

    svg = re.search(r"<svg role=\"img\".*?</svg>", page, re.S).group(0)
    assert '<title id="chart-title">Submissions per form per day' in svg
    assert "4 submissions from" in svg and "default 3, hosted 1." in svg
    today = dt.datetime.now(dt.UTC)
    assert f"<title>{today:%b %d}, default: 3</title>" in svg
    table = re.search(r'<details class="numbers">.*?</details>', page, re.S)[0]
    row = re.search(rf'<tr><th scope="row">{today.date()}</th>(.*?)</tr>', table)
    assert re.findall(r"<td>(\d+)</td>", row.group(1)) == ["3", "1", "4"]
    text = text_of(page)
    assert "Backlog 0 undelivered (0 pending, 0 sending)" in text
    assert "Oldest pending none" in text
    assert re.search(r"Status working Last success \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert "Last failure none recorded" in text

    # A worker with the wrong password: the relay refuses it, and says why.
    post_endpoint(client, subject="still waiting")
    wrong = make_app(relay.env(DATABASE_URL=url, SMTP_PASSWORD="not the password"))
    deliver(wrong)
    text = text_of(owner.get("/admin/dashboard").get_data(as_text=True))
    assert "Backlog 1 undelivered (1 pending, 0 sending)" in text
    assert re.search(r"Oldest pending \d+ s old \(queued \d{4}-\d\d-\d\d", text)
    assert "Failed 0" in text
    assert re.search(r"Status failing since \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert re.search(r"Last success \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    last_failure = re.search(r"Last failure (.*?) The doctor", text).group(1)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC \(\w+\)", last_failure)
    assert "535" in last_failure  # the relay's own reply


def test_the_dashboard_shows_a_failing_relay_and_escapes_its_reply(console, owner):
    ledger_of(console).record_relay("refused", "554 <script>alert(1)</script>")
    page = owner.get("/admin/dashboard").get_data(as_text=True)
    assert "<script>alert" not in page
    assert "554 &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert re.search(r'class="bad">failing</span> since \d{4}-\d\d-\d\d', page)
    assert "No submissions in the last 30 days." in page
    assert "Last success none recorded" in text_of(page)


# -- the doctor button -----------------------------------------------------------


def checks_of(page: str) -> dict[str, tuple[str, str]]:
    """The report as {check: (RESULT, what was found, with its fix)}."""
    rows = re.findall(
        r'<tr class="check-\w+">\s*<td><span class="mark mark-\w+">(\w+)</span></td>'
        r"\s*<td>(.*?)</td>\s*<td dir=\"auto\">(.*?)</td>",
        page,
        re.S,
    )
    return {unescape(name): (mark, unescape(found)) for mark, name, found in rows}


def test_the_doctor_button_runs_the_checks_against_the_relay(console, owner, relay):
    response = owner.post("/admin/doctor", data={"csrf_token": token(owner)})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    checks = checks_of(page)
    for name in ("configuration", "database", "schema", "connect", "tls mode"):
        assert checks[name][0] == "PASS", (name, checks[name])
    assert checks["auth"] == ("PASS", "logged in as formpost")
    assert checks["rcpt sales"] == ("PASS", "<sales@example.com> accepted")
    assert checks["rcpt support"][0] == "PASS"
    assert checks["dns"][0] in ("SKIP", "PASS", "WARN")  # no outside network here
    assert "0 failed" in page and "Nothing was sent." in page
    assert relay.received == []  # RSET before DATA: nothing sent
    assert response.headers["Cache-Control"] == "no-store"


def test_the_doctor_button_shows_a_failing_check_and_its_fix(make_app, relay):
    app = with_owner(make_app(relay.env(SMTP_PASSWORD="not the password")))
    client = app.test_client()
    log_in(client)
    page = client.post("/admin/doctor", data={"csrf_token": token(client)})
    checks = checks_of(page.get_data(as_text=True))
    mark, found = checks["auth"]
    assert mark == "FAIL" and found.startswith("refused: 535")
    assert "Fix: check SMTP_USERNAME and SMTP_PASSWORD" in found
    assert "rcpt sales" not in checks  # stops at the failed log-in
    assert "1 failed" in page.get_data(as_text=True)


def test_the_doctor_button_is_a_post_behind_csrf(console, owner):
    assert owner.get("/admin/doctor").status_code == 405
    assert owner.post("/admin/doctor").status_code == 400
    logged_out = console.test_client()
    response = logged_out.post("/admin/doctor")
    assert response.status_code in (302, 400)  # never a report


def test_the_doctor_runs_three_times_a_minute_per_owner(console, owner):
    clock = use_fake_clock(console)
    for _ in range(3):
        response = owner.post("/admin/doctor", data={"csrf_token": token(owner)})
        assert response.status_code == 200
    refused = owner.post("/admin/doctor", data={"csrf_token": token(owner)})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 20
    assert "The checks ran a moment ago. Please try again in" in refused.get_data(
        as_text=True
    )
    clock.advance(21)
    response = owner.post("/admin/doctor", data={"csrf_token": token(owner)})
    assert response.status_code == 200


class SilentServer:
    """A TCP port that accepts and never speaks: the doctor waits on it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_double_click_runs_the_doctor_once(make_app, relay):
    silent = SilentServer()
    try:
        env = relay.env(SMTP_PORT=str(silent.port), SMTP_SECURITY="none")
        app = with_owner(make_app(env))
        client = app.test_client()
        log_in(client)
        data = {"csrf_token": token(client)}
        answers: list = []
        # Two presses with the same session: the second joins the first run.
        session = client.get_cookie("session").value
        clients = []
        for _ in range(2):
            other = app.test_client()
            other.set_cookie("session", session)
            clients.append(other)
        threads = [
            threading.Thread(
                target=lambda c=c: answers.append(c.post("/admin/doctor", data=data))
            )
            for c in clients
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        silent.close()
    assert [a.status_code for a in answers] == [200, 200]
    pages = [checks_of(a.get_data(as_text=True)) for a in answers]
    assert pages[0] == pages[1]
    assert pages[0]["tls mode"][0] == "FAIL"  # silence: it expects TLS first
    assert len(silent.accepted) == 2  # one run: connect, then the TLS probe


# -- the forms page ----------------------------------------------------------------

FORMS_TOML = """
[forms.support]
recipients = ["support"]
allowed_origins = ["https://help.example.com", "https://a.example.com"]
redirect_hosts = ["help.example.com"]
subject = "[Support] <b>{subject}</b>"
honeypot = '"><script>alert(1)</script>'
rate_limit = "3/minute;20/day"
required = ["email", "message", "order <number>"]
"""


@pytest.fixture
def with_forms(make_app, relay, tmp_path):
    path = tmp_path / "forms.toml"
    path.write_text(FORMS_TOML, encoding="utf-8")
    return with_owner(make_app(relay.env(FORMS_FILE=str(path), RATE_LIMIT="off")))


def test_the_forms_page_shows_each_forms_settings(with_forms):
    client = with_forms.test_client()
    log_in(client)
    page = client.get("/admin/forms").get_data(as_text=True)
    assert "<script>alert" not in page
    section = re.search(r'<section[^>]*id="form-support".*?</section>', page, re.S)[0]
    text = text_of(section)
    assert "Posts to http://localhost/f/support" in text
    assert "Recipients support: help@example.org" in text
    assert "sales" not in text.split("Allowed origins")[0]
    assert "Allowed origins https://a.example.com https://help.example.com" in text
    assert "Redirect hosts help.example.com" in text
    assert "Subject [Support] <b>{subject}</b>" in text
    assert f"Honeypot {HOSTILE}" in text
    assert "Rate limit 3/minute;20/day" in text
    assert "Required fields email , message , order <number>" in text
    default = re.search(r'<section[^>]*id="form-default".*?</section>', page, re.S)[0]
    default_text = text_of(default)
    assert "sales: sales@example.com" in default_text
    assert "support: help@example.org" in default_text
    assert "Rate limit off" in default_text


def test_the_forms_page_snippets_are_shown_escaped(with_forms):
    client = with_forms.test_client()
    log_in(client)
    page = client.get("/admin/forms").get_data(as_text=True)
    code = re.search(r'<code id="plain-support">(.*?)</code>', page, re.S).group(1)
    assert "<" not in code  # all of it text, none of it markup on this page
    snippet = unescape(code)
    assert snippet.startswith(
        '<form action="http://localhost/f/support" method="POST">'
    )
    # The snippet escapes configuration for the owner's page in turn.
    assert 'name="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in snippet
    fetch = unescape(re.search(r'<code id="fetch-support">(.*?)</code>', page, re.S)[1])
    assert "Serve this page from https://a.example.com" in fetch


def test_the_forms_page_needs_a_log_in(with_forms):
    response = with_forms.test_client().get("/admin/forms")
    assert response.status_code == 302


def test_plain_snippet_fields():
    form = FormDef(
        id="quote",
        recipients=("sales",),
        honeypot="website",
        required=("Message", "phone"),
    )
    html = plain_html(form, "https://forms.example.com/f/quote")
    assert html.startswith(
        '<form action="https://forms.example.com/f/quote" method="POST">'
    )
    assert '<textarea name="message" required>' in html  # names match in any case
    assert '<input name="name" autocomplete="name">' in html  # not required
    assert '<input name="phone" required>' in html
    assert (
        '<input type="text" name="website" tabindex="-1" autocomplete="off"\n'
        '         style="position:absolute;left:-10000px" aria-hidden="true">'
    ) in html
    assert "<script" not in html


def test_fetch_snippet_reads_the_json_answer():
    form = FormDef(id="default", recipients=("sales",))
    js = fetch_html(form, "https://forms.example.com/f/default")
    assert '"Accept": "application/json"' in js
    assert "new FormData(form)" in js
    assert "json.message" in js and "json.errors" in js
    assert "innerHTML" not in js  # the answer is shown as text
    assert "Add your site's origin" in js  # no allowed origin yet


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        ((), "off"),
        (((5, 60), (50, 86400)), "5/minute;50/day"),
        (((2, 7),), "2/7second"),
    ],
)
def test_rate_text(rate, text):
    assert rate_text(rate) == text


# -- every console page's headers, logged in and out -------------------------------

ROUTES = [
    ("GET", "/admin/"),
    ("GET", "/admin/login"),
    ("POST", "/admin/login"),
    ("POST", "/admin/logout"),
    ("GET", "/admin/dashboard"),
    ("POST", "/admin/doctor"),
    ("GET", "/admin/forms"),
    ("GET", "/admin/s/<receipt>"),
    ("POST", "/admin/s/<receipt>/retry"),
    ("POST", "/admin/s/<receipt>/release"),
    ("POST", "/admin/s/<receipt>/deliveries/<int:delivery>/retry"),
    ("POST", "/admin/s/<receipt>/delete"),
    ("GET", "/admin/bulk/<action>"),
    ("POST", "/admin/bulk/<action>"),
    ("GET", "/admin/export.<kind>"),
    ("GET", "/admin/s/<receipt>/files/<int:position>"),
    ("GET", "/admin/files/<token>"),
    ("OPTIONS", "/admin/"),
    ("OPTIONS", "/admin/forms"),
]
# What each route's placeholders are filled with (a stored receipt is added).
EXAMPLES = {
    "<action>": "retry",
    "<kind>": "csv",
    "<int:position>": "0",
    "<token>": "not-a-signed-link",
    "<int:delivery>": "1",
}


def test_the_header_tests_cover_every_console_route(console):
    rules = {
        (method, rule.rule)
        for rule in console.url_map.iter_rules()
        if rule.rule.startswith("/admin")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert rules == {(m, p) for m, p in ROUTES if m != "OPTIONS"}


@pytest.mark.parametrize("logged_in", [True, False], ids=["owner", "visitor"])
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_console_answer_has_the_consoles_headers(
    console, method, path, logged_in
):
    post_endpoint(console.test_client())
    (row,) = ledger_of(console).rows()
    for placeholder, value in {**EXAMPLES, "<receipt>": row.receipt}.items():
        path = path.replace(placeholder, value)
    client = console.test_client()
    if logged_in:
        log_in(client)
    source = "/admin/dashboard" if logged_in else "/admin/login"
    data = {"csrf_token": token(client, source)} if method == "POST" else None
    response = client.open(
        path,
        method=method,
        data=data,
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
        },
    )
    assert response.status_code < 500
    assert response.headers["Cache-Control"] == "no-store"
    csp = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert not re.search(r"https?:|\*|data:", csp)  # no third-party source
    assert not [h for h, _ in response.headers if h.lower().startswith("access-")]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["/admin/", "/admin/dashboard", "/admin/forms"])
def test_console_pages_load_no_inline_script(owner, path):
    page = owner.get(path).get_data(as_text=True)
    scripts = re.findall(r"<script\b([^>]*)>", page)
    assert scripts == [' src="/static/console.js" defer']
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers
    assert "style=" not in page.replace("style=&#34;", "").replace("style=&quot;", "")
