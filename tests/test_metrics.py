"""/metrics: off by default, bearer-token only, counts from real traffic."""

from __future__ import annotations

import re
import urllib.parse
import urllib.request

import pytest

from app import metrics

from .helpers import deliver, post_form
from .processes import (
    gunicorn_and_worker,
    hold_worker,
    read_hits,
    release,
    server_env,
    wait_until,
)

TOKEN = "metrics-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ORIGIN = "https://www.example.com"
LINE = re.compile(r"^(formpost_\w+)(\{[^}]*\})? (\S+)$")


def scrape(client) -> dict[str, float]:
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    values: dict[str, float] = {}
    for line in response.get_data(as_text=True).splitlines():
        match = LINE.match(line)
        if match:
            values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return values


def delta(before: dict[str, float], after: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture
def metered(make_app, relay):
    return make_app(relay.env(METRICS_TOKEN=TOKEN, ALLOWED_ORIGINS=ORIGIN))


def test_metrics_are_off_without_a_token(make_app, relay):
    client = make_app(relay.env()).test_client()
    assert client.get("/metrics").status_code == 404


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-00000000"}, {"Authorization": TOKEN}],
)
def test_metrics_refuse_a_missing_or_wrong_token(metered, headers):
    response = metered.test_client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert TOKEN not in response.get_data(as_text=True)
    assert "formpost_" not in response.get_data(as_text=True)


def test_counts_follow_real_submissions_and_deliveries(metered, relay):
    client = metered.test_client()
    before = scrape(client)
    assert post_form(client).status_code == 303
    assert post_form(client, subject="").status_code == 400
    json_post = {"Origin": ORIGIN, "Accept": "application/json"}
    for _ in range(2):
        ok = client.post("/f/default", data={"message": "hi"}, headers=json_post)
        assert ok.status_code == 200
    refused = client.post(
        "/f/default",
        data={"message": "hi"},
        headers={"Origin": "https://evil.example", "Accept": "application/json"},
    )
    assert refused.status_code == 403
    bot = client.post(
        "/f/default", data={"message": "x", "_gotcha": "y"}, headers=json_post
    )
    assert bot.status_code == 200
    middle = scrape(client)
    assert middle["formpost_backlog"] == 3
    relay.reply_next("RCPT", "550 5.1.1 gone")
    deliver(metered)
    after = scrape(client)

    sub = "formpost_submissions_total"
    dlv = "formpost_deliveries_total"
    expected = {
        sub + '{form="hosted",outcome="accepted",reason=""}': 1,
        sub + '{form="hosted",outcome="rejected",reason="invalid"}': 1,
        sub + '{form="default",outcome="accepted",reason=""}': 2,
        sub + '{form="default",outcome="rejected",reason="origin"}': 1,
        sub + '{form="default",outcome="dropped",reason=""}': 1,
        'formpost_spam_verdicts_total{form="default",verdict="accept"}': 2,
        'formpost_spam_verdicts_total{form="default",verdict="drop"}': 1,
        'formpost_spam_verdicts_total{form="hosted",verdict="accept"}': 1,
        'formpost_spam_reasons_total{layer="rules",rule="honeypot",verdict="drop"}': 1,
        dlv + '{outcome="sent"}': 2,
        dlv + '{outcome="failed"}': 1,
        "formpost_delivery_latency_seconds_count": 2,
    }
    assert {name: delta(before, after, name) for name in expected} == expected
    assert after["formpost_backlog"] == 0
    assert after["formpost_failed"] == 1


@pytest.mark.slow
def test_counters_add_up_across_gunicorn_and_delivery_processes(make_relay, tmp_path):
    """Two gunicorn workers and a delivery worker: one total, whoever counted."""
    relay = make_relay()
    env = server_env(tmp_path / "instance")
    env.update(relay.env(METRICS_TOKEN=TOKEN, ALLOWED_ORIGINS=ORIGIN))
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path}/ledger.db",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        WEB_CONCURRENCY="2",
    )
    posts = 24
    # Sync workers: holding one request holds a worker (below).
    options = ["--bind", "127.0.0.1:0", "--worker-class", "sync", "--threads", "1"]
    with gunicorn_and_worker(env, tmp_path, *options) as served:
        base = f"http://127.0.0.1:{served.port}"

        def post(n: int) -> None:
            request = urllib.request.Request(
                f"{base}/f/default",
                data=urllib.parse.urlencode({"message": f"m{n}"}).encode(),
                headers={"Origin": ORIGIN, "Accept": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 200

        # Hold one gunicorn worker with half a request so that posts go to
        # the other; repeat until both workers have taken some.
        def serving_pids() -> set[int]:
            hits = read_hits(served.access_path)
            return {hit.pid for hit in hits if hit.path == "/f/default"}

        sent_posts = 0
        for _ in range(10):
            held = hold_worker(served.port, settle=0.3)
            for _ in range(2):
                post(sent_posts)
                sent_posts += 1
            release(held)
            if len(serving_pids()) == 2:
                break
        while sent_posts < posts:
            post(sent_posts)
            sent_posts += 1
        wait_until(lambda: len(relay.received) == posts, 30, "deliveries")
        assert len(serving_pids()) == 2

        def scraped() -> dict[str, float]:
            request = urllib.request.Request(f"{base}/metrics", headers=AUTH)
            with urllib.request.urlopen(request, timeout=10) as answer:
                text = answer.read().decode()
            return {
                m.group(1) + (m.group(2) or ""): float(m.group(3))
                for m in map(LINE.match, text.splitlines())
                if m
            }

        accepted = (
            'formpost_submissions_total{form="default",outcome="accepted",reason=""}'
        )
        sent = 'formpost_deliveries_total{outcome="sent"}'
        wait_until(lambda: scraped().get(sent) == posts, 10, "the worker's counts")
        values = scraped()
    assert values[accepted] == posts
    assert values["formpost_delivery_latency_seconds_count"] == posts


def test_spam_reasons_are_counted_by_fixed_codes_only(make_app, relay):
    app = make_app(
        relay.env(
            METRICS_TOKEN=TOKEN, ALLOWED_ORIGINS=ORIGIN, SPAM_BLOCKED_WORDS="casino"
        )
    )
    client = app.test_client()
    before = scrape(client)
    headers = {"Origin": ORIGIN, "Accept": "application/json"}
    client.post("/f/default", data={"message": "casino chips"}, headers=headers)
    # A code that is not a plain identifier is counted as "other".
    metrics.verdict("default", "quarantine", [("rules", "Bad Code!\n")])
    after = scrape(client)
    reasons = 'formpost_spam_reasons_total{layer="rules",rule="%s",verdict="%s"}'
    assert delta(before, after, reasons % ("blocked_word", "quarantine")) == 1
    assert delta(before, after, reasons % ("other", "quarantine")) == 1
    sub = 'formpost_submissions_total{form="default",outcome="quarantined",reason=""}'
    assert delta(before, after, sub) == 1
    assert "casino" not in client.get("/metrics", headers=AUTH).get_data(as_text=True)
