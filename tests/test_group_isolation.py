"""One bad row never fails its neighbours in a group commit.

Posts in flight together share one transaction; a row the database refuses
(whatever the error) must cost only that row. And no value a client can send
may make a row the database refuses: every column fits by construction.
"""

from __future__ import annotations

import threading

import pytest

from app.ledger import StorageError
from app.message import Envelope

from .helpers import envelope, ledger_of, posts_in_one_batch

SITE = "https://www.example.com"


def poison(engine, subject: str) -> None:
    """Make the database refuse, with a plain error, a row with this subject."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON submissions "
                f"WHEN NEW.subject = '{subject}' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
            )
        else:
            # RAISE EXCEPTION: not an integrity error, the case a shared
            # commit used to fail entirely.
            conn.exec_driver_sql(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN IF NEW.subject = '{subject}' THEN "
                "RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON submissions "
                "FOR EACH ROW EXECUTE FUNCTION poison()"
            )


def test_a_poisoned_row_among_16_costs_only_itself(ledger):
    poison(ledger.engine, "poison")

    def post(n: int):
        subject = "poison" if n == 9 else f"s{n}"
        return lambda: ledger.enqueue(
            envelope(n), form_id="default", alias="sales", subject=subject
        )

    results, _ = posts_in_one_batch(ledger, [post(n) for n in range(16)])
    assert isinstance(results[9], StorageError), results[9]
    stored = {r.receipt for r in ledger.rows()}
    others = [r for i, r in enumerate(results) if i != 9]
    assert all(isinstance(r, str) for r in others), others
    assert stored == set(others)
    assert len(stored) == 15


def test_16_concurrent_posts_with_the_longest_form_id_and_key_all_stored(
    make_app, relay, database_url, tmp_path
):
    """A 40-character form and a 128-character Idempotency-Key among 15 others."""
    long_form = "f" * 40
    forms = tmp_path / "forms.toml"
    forms.write_text(
        f'[forms.{long_form}]\nrecipients = ["sales"]\nallowed_origins = ["{SITE}"]\n'
        f'[forms.short]\nrecipients = ["sales"]\nallowed_origins = ["{SITE}"]\n'
    )
    app = make_app(relay.env(DATABASE_URL=database_url, FORMS_FILE=str(forms)))
    statuses: list[int] = []
    barrier = threading.Barrier(16)

    def post(n: int) -> None:
        client = app.test_client()
        headers = {"Origin": SITE, "Accept": "application/json"}
        path = "/f/short"
        if n == 0:
            path = f"/f/{long_form}"
            headers["Idempotency-Key"] = "k" * 128
        barrier.wait(10)
        response = client.post(
            path, data={"email": "a@example.net", "message": f"m{n}"}, headers=headers
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=post, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(statuses) == 16
    assert all(s // 100 == 2 for s in statuses), statuses
    assert len(ledger_of(app).rows()) == 16


@pytest.mark.parametrize(
    ("column", "value"),
    [("form_id", "f" * 65), ("recipient_alias", "a" * 65), ("mail_from", "m" * 321)],
)
def test_a_value_too_long_for_its_column_is_refused_before_any_commit(
    ledger, column, value
):
    """A mistake upstream is caught before the row joins a shared commit."""
    kwargs = {"form_id": "default", "alias": "sales"}
    env = envelope(1)
    if column == "form_id":
        kwargs["form_id"] = value
    elif column == "recipient_alias":
        kwargs["alias"] = value
    else:
        env = Envelope(value, env.recipients, env.data, env.message_id)
    with pytest.raises(StorageError, match=column):
        ledger.enqueue(env, subject="s", **kwargs)
    assert ledger.rows() == []


def test_a_long_subject_and_client_address_are_cut_to_fit(ledger):
    receipt = ledger.enqueue(
        envelope(1),
        form_id="default",
        alias="sales",
        subject="s" * 1000,
        client_ip="x" * 300,
    )
    row = ledger.row(receipt)
    assert (len(row.subject), len(row.client_ip)) == (400, 64)
