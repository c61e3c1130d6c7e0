"""How a post is answered: JSON or a page, by negotiation."""

from __future__ import annotations

import pytest

from .posting import (
    EVIL,
    FIELDS,
    HTML,
    JSON,
    PAGE,
    SITE,
    assert_json_accepted,
    assert_json_error,
    post,
    post_json,
    rows,
)

# -- content negotiation ------------------------------------------------------


def test_json_answer_is_never_a_redirect(app, client):
    """A JSON body (or Accept) gets 200 and the receipt even with `_next`."""
    for response in (
        post_json(client, {**FIELDS, "_next": "/thanks.html"}),
        post(client, {**FIELDS, "_next": "/thanks.html"}, headers=JSON),
    ):
        receipt = assert_json_accepted(response)
        assert receipt in {row.receipt for row in rows(app)}


ERRORS = [
    # status, settings, successful posts first, the post, what the page says
    pytest.param(
        400,
        {},
        0,
        {"data": {**FIELDS, "to": "victim@evil.test"}},
        "Unknown recipient",
        id="400",
    ),
    pytest.param(
        403,
        {},
        0,
        {"data": FIELDS, "headers": {"Origin": EVIL}},
        "may not post",
        id="403",
    ),
    pytest.param(
        413,
        {"MAX_CONTENT_LENGTH": "2048"},
        0,
        {"data": {**FIELDS, "message": "x" * 4000}},
        "larger than 2 kB",
        id="413",
    ),
    pytest.param(
        415,
        {},
        0,
        {"data": "message=hi", "content_type": "text/plain"},
        "multipart/form-data",
        id="415",
    ),
    pytest.param(
        422,
        {},
        0,
        {"data": {**FIELDS, "email": "not an address"}},
        "Enter an email address like name@example.com",
        id="422",
    ),
    pytest.param(
        429,
        {"RATE_LIMIT": "1/minute"},
        1,
        {"data": FIELDS},
        "Too many messages from your address",
        id="429",
    ),
    pytest.param(
        503,
        {"BACKLOG_LIMIT": "1"},
        1,
        {"data": FIELDS},
        "receiving too many messages",
        id="503",
    ),
]


def _error_response(build, settings, prior, request, accept):
    app = build(**settings)
    client = app.test_client()
    for _ in range(prior):
        assert_json_accepted(post(client, FIELDS, headers=JSON))
    headers = {**accept, "Referer": PAGE, **request.get("headers", {})}
    kwargs = {k: v for k, v in request.items() if k != "headers"}
    return app, post(client, headers=headers, **kwargs)


@pytest.mark.parametrize(("status", "settings", "prior", "request_", "text"), ERRORS)
def test_errors_as_json(build, status, settings, prior, request_, text):
    app, response = _error_response(build, settings, prior, request_, JSON)
    errors = assert_json_error(response, status)
    assert any(text.lower() in message.lower() for message in errors.values())
    assert len(rows(app)) == prior
    if status in (429, 503):
        assert int(response.headers["Retry-After"]) > 0


@pytest.mark.parametrize(("status", "settings", "prior", "request_", "text"), ERRORS)
def test_errors_as_html_pages(build, status, settings, prior, request_, text):
    app, response = _error_response(build, settings, prior, request_, HTML)
    assert response.status_code == status
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "<html" in page
    assert text.lower() in page.lower()
    if status == 403:
        assert PAGE not in page  # the link back is only to an allowed page
    else:
        assert f'<a href="{PAGE}">' in page
    assert len(rows(app)) == prior


def test_html_error_links_to_the_origin_without_a_referer(client):
    response = post(client, {"message": ""}, headers=HTML)
    assert response.status_code == 422
    assert f'<a href="{SITE}/">' in response.get_data(as_text=True)


def test_unknown_form_is_404(client):
    response = post(client, FIELDS, path="/f/nope", headers=JSON)
    assert_json_error(response, 404, "_form")
    page = post(client, FIELDS, path="/f/nope", headers=HTML)
    assert page.status_code == 404
    text = page.get_data(as_text=True)
    assert "<html" in text and "There is no form with this address." in text
