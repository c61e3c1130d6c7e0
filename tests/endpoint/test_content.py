"""What a post may be: content types, JSON shapes, files."""

from __future__ import annotations

import io
import re

import pytest

from .posting import (
    FIELDS,
    HTML,
    JSON,
    assert_json_accepted,
    assert_json_error,
    assert_nothing_stored_or_sent,
    only_message,
    post,
    post_json,
    rows,
    text_of,
)

# -- content types ------------------------------------------------------------


@pytest.mark.parametrize("accept", ["json", "html"])
@pytest.mark.parametrize("encoding", ["urlencoded", "multipart", "json"])
def test_accepted_content_types(app, client, relay, encoding, accept):
    headers = JSON if accept == "json" else HTML
    if encoding == "json":
        response = post_json(client, FIELDS, headers=headers)
    else:
        content_type = (
            "multipart/form-data"
            if encoding == "multipart"
            else "application/x-www-form-urlencoded"
        )
        response = post(client, FIELDS, headers=headers, content_type=content_type)
    if encoding == "json" or accept == "json":
        receipt = assert_json_accepted(response)
    else:
        assert response.status_code == 303
        receipt = re.search(r"receipt=([A-Z0-9-]+)", response.location).group(1)
    (row,) = rows(app)
    assert row.receipt == receipt and row.form_id == "default"
    got = only_message(app, relay)
    assert got.rcpt_tos == ["sales@example.com"]
    assert "message: A question about engines." in text_of(got)


def test_an_empty_file_input_is_not_an_upload(app, client, relay):
    """Browsers send a file part with no name when nothing was chosen."""
    data = {**FIELDS, "attachment": (io.BytesIO(b""), "")}
    response = post(client, data, headers=JSON, content_type="multipart/form-data")
    assert_json_accepted(response)
    assert len(rows(app)) == 1


def test_multipart_with_a_file_is_415_and_nothing_stored(app, client, relay):
    data = {**FIELDS, "attachment": (io.BytesIO(b"%PDF-1.4"), "cv.pdf")}
    response = post(client, data, headers=JSON, content_type="multipart/form-data")
    assert_json_error(response, 415, "attachment")
    assert_nothing_stored_or_sent(app, relay)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml"])
def test_other_body_types_are_415(app, client, relay, content_type):
    response = post(client, "message=hi", headers=JSON, content_type=content_type)
    assert_json_error(response, 415, "_form")
    assert_nothing_stored_or_sent(app, relay)


@pytest.mark.parametrize(
    "body", ['["message", "hi"]', '"hi"', "42", "null", "{not json"]
)
def test_json_that_is_not_an_object_is_400(app, client, relay, body):
    response = post(client, body, content_type="application/json")
    assert_json_error(response, 400, "_form")
    assert rows(app) == []


@pytest.mark.parametrize(
    "value", [{"nested": "object"}, [{"a": 1}], [["x"]]], ids=["dict", "dicts", "lists"]
)
def test_json_nested_values_are_422_naming_the_field(app, client, value):
    response = post_json(client, {**FIELDS, "extra": value})
    assert_json_error(response, 422, "extra")
    assert rows(app) == []


def test_json_scalars_and_lists_become_text(app, client, relay):
    fields = {"message": "hi", "agree": True, "spam": False, "n": 3, "tags": ["a", 2]}
    assert_json_accepted(post_json(client, {**fields, "nothing": None}))
    text = text_of(only_message(app, relay))
    for line in ("agree: yes", "spam: no", "n: 3", "tags: a, 2", "nothing: "):
        assert line in text.splitlines()
