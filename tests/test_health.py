"""Liveness."""

from __future__ import annotations


def test_healthz_is_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_healthz_does_not_touch_the_relay(make_app, relay):
    relay.stop()  # a dead relay must not make the process look dead
    client = make_app(relay.env()).test_client()
    assert client.get("/healthz").status_code == 200
