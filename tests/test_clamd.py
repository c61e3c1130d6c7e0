"""clamd: posted files scanned by Debian's real clamd before they are stored.

A virus quarantines the post (state `spam`, the signature in the verdict)
and nothing is sent; an unreachable clamd follows the form's `fail` setting.
"""

from __future__ import annotations

import io
import json

import pytest

from app.clamd import ClamdSettings, ScanUnavailable, instream, scan_files
from app.uploads import Upload

from .clamdkit import EICAR, SIGNATURE, running_clamd
from .helpers import deliver, ledger_of

SITE = "https://www.example.com"
FOUND = f"{SIGNATURE}.UNOFFICIAL"  # clamd marks signatures of local databases
CLEAN = b"An honest CV.\n" * 100


@pytest.fixture(scope="module")
def clamd_socket(tmp_path_factory):
    with running_clamd(tmp_path_factory.mktemp("clamd")) as sock:
        yield str(sock)


def upload(name: str, data: bytes) -> Upload:
    return Upload("f", name, io.BytesIO(data), len(data), "", "text/plain")


def test_instream_finds_eicar_and_passes_clean_files(clamd_socket):
    settings = ClamdSettings(socket_path=clamd_socket)
    assert instream(settings, [EICAR[:10], EICAR[10:]]) == FOUND
    assert instream(settings, [CLEAN]) is None
    assert instream(settings, []) is None


def test_an_unreachable_clamd_is_unavailable(tmp_path):
    settings = ClamdSettings(socket_path=str(tmp_path / "none.sock"), timeout=1)
    with pytest.raises(ScanUnavailable, match="none.sock"):
        instream(settings, [CLEAN])


@pytest.mark.parametrize(
    ("fail", "action"), [("open", "score"), ("closed", "quarantine")]
)
def test_an_outage_follows_the_fail_setting(tmp_path, fail, action):
    settings = ClamdSettings(socket_path=str(tmp_path / "none.sock"), timeout=1)
    (reason,) = scan_files(settings, [upload("a.txt", CLEAN)], fail)
    assert (reason.layer, reason.rule, reason.action) == (
        "clamd",
        "clamd_unavailable",
        action,
    )


def test_a_hit_names_the_signature_and_the_file(clamd_socket):
    settings = ClamdSettings(socket_path=clamd_socket)
    files = [upload("ok.txt", CLEAN), upload("eicar.txt", EICAR)]
    (reason,) = scan_files(settings, files)
    assert (reason.layer, reason.rule, reason.value) == ("clamd", "virus", FOUND)
    assert reason.threshold == "in eicar.txt"
    assert reason.action == "quarantine"


def files_app(make_app, relay, database_url, sock, **extra):
    return make_app(
        relay.env(
            ALLOWED_ORIGINS=SITE,
            DATABASE_URL=database_url,
            ATTACHMENTS_MAX_FILES="2",
            CLAMD_SOCKET=sock,
            **extra,
        )
    )


def post_file(app, name, data):
    answer = app.test_client().post(
        "/f/default",
        data={"email": "ada@example.net", "f": (io.BytesIO(data), name)},
        headers={"Origin": SITE, "Accept": "application/json"},
    )
    # The visitor is answered as for any post: a bot learns nothing.
    assert answer.status_code == 200 and answer.json["ok"] is True
    return answer.json["id"]


def test_a_virus_quarantines_the_post_and_nothing_is_sent(
    make_app, relay, database_url, clamd_socket
):
    app = files_app(make_app, relay, database_url, clamd_socket)
    receipt = post_file(app, "eicar.txt", EICAR)
    row = ledger_of(app).row(receipt)
    assert row.state == "spam"
    verdict = json.loads(row.verdict)
    assert verdict["verdict"] == "quarantine"
    (reason,) = verdict["reasons"]
    assert (reason["layer"], reason["rule"], reason["value"]) == (
        "clamd",
        "virus",
        FOUND,
    )
    deliver(app)
    assert relay.received == []
    assert ledger_of(app).stats().backlog == 0


def test_a_clean_file_is_stored_and_sent(make_app, relay, database_url, clamd_socket):
    app = files_app(make_app, relay, database_url, clamd_socket)
    receipt = post_file(app, "cv.txt", CLEAN)
    row = ledger_of(app).row(receipt)
    assert row.state == "pending"
    assert json.loads(row.verdict) == {"verdict": "accept", "score": 0, "reasons": []}
    deliver(app)
    (got,) = relay.received
    assert [p.get_filename() for p in got.message.iter_attachments()] == ["cv.txt"]


def test_clamd_down_quarantines_a_form_that_fails_closed(
    make_app, relay, database_url, tmp_path
):
    app = files_app(
        make_app, relay, database_url, str(tmp_path / "gone.sock"), SPAM_FAIL="closed"
    )
    receipt = post_file(app, "cv.txt", CLEAN)
    row = ledger_of(app).row(receipt)
    assert row.state == "spam"
    (reason,) = json.loads(row.verdict)["reasons"]
    assert (reason["rule"], reason["action"]) == ("clamd_unavailable", "quarantine")
    deliver(app)
    assert relay.received == []


def test_clamd_down_lets_the_post_through_by_default(
    make_app, relay, database_url, tmp_path
):
    app = files_app(make_app, relay, database_url, str(tmp_path / "gone.sock"))
    receipt = post_file(app, "cv.txt", CLEAN)
    row = ledger_of(app).row(receipt)
    assert row.state == "pending"
    (reason,) = json.loads(row.verdict)["reasons"]
    assert reason["rule"] == "clamd_unavailable"
    deliver(app)
    assert len(relay.received) == 1
