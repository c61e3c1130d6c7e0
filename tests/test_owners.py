"""Owner accounts (app/owners.py) and `flask --app wsgi users ...` (app/users.py)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from app.ledger.owners import OwnerExists
from app.owners import AccountError, Owners

from .helpers import fast_hashing, services_of

GOOD = "correct horse battery"


@pytest.fixture
def owners(make_app) -> Owners:
    app = make_app()
    fast_hashing(app)
    return services_of(app).owners


@pytest.fixture
def cli(make_app):
    app = make_app()
    fast_hashing(app)
    runner = app.test_cli_runner()
    return app, lambda *args, **kw: runner.invoke(args=list(args), **kw)


def test_the_default_hasher_is_argon2id():
    assert PasswordHasher().hash(GOOD).startswith("$argon2id$")


def test_a_password_is_stored_only_as_an_argon2id_hash(owners):
    owners.add("Owner@Example.COM", GOOD)
    (record,) = owners.all()
    assert record.email == "owner@example.com"
    assert record.password_hash.startswith("$argon2id$")
    assert GOOD not in record.password_hash


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("owner@example.com", GOOD),
        ("OWNER@example.com", GOOD),
        ("  owner@example.com ", GOOD),
    ],
)
def test_the_right_email_and_password_log_in(owners, email, password):
    owners.add("owner@example.com", GOOD)
    owner = owners.authenticate(email, password)
    assert owner is not None and owner.email == "owner@example.com"
    assert owners.all()[0].last_login_at is not None


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("owner@example.com", "correct horse batterY"),
        ("owner@example.com", ""),
        ("owner@example.com", GOOD + " "),
        ("other@example.com", GOOD),
        ("not an email", GOOD),
        ("owner@example.com", "x" * 5000),
    ],
)
def test_anything_else_does_not(owners, email, password):
    owners.add("owner@example.com", GOOD)
    assert owners.authenticate(email, password) is None
    assert owners.all()[0].last_login_at is None


@pytest.mark.parametrize(
    ("email", "password", "says"),
    [
        ("owner@example.com", "short", "at least 12"),
        ("owner@example.com", "x" * 1025, "at most 1024"),
        ("owner@example.com", " " + GOOD, "space"),
        ("nobody", GOOD, "not an email address"),
    ],
)
def test_unusable_emails_and_passwords_are_refused_saying_why(
    owners, email, password, says
):
    with pytest.raises(AccountError, match=says):
        owners.add(email, password)
    assert owners.all() == []


def test_one_account_per_email(owners):
    owners.add("owner@example.com", GOOD)
    with pytest.raises(OwnerExists):
        owners.add("OWNER@example.com", GOOD + "!")


def test_a_new_password_ends_every_session(owners):
    owner = owners.add("owner@example.com", GOOD)
    session_id = owner.get_id()
    assert owners.load(session_id) is not None
    assert owners.set_password("owner@example.com", GOOD + "2")
    assert owners.load(session_id) is None
    assert owners.authenticate("owner@example.com", GOOD) is None
    assert owners.authenticate("owner@example.com", GOOD + "2") is not None


@pytest.mark.parametrize("session_id", ["", "1", "1:", "x:y", "1:wrong", "999:abc"])
def test_a_forged_session_id_loads_nobody(owners, session_id):
    owners.add("owner@example.com", GOOD)
    assert owners.load(session_id) is None


def test_a_weaker_old_hash_is_upgraded_at_log_in(owners):
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    owners.hasher = weak
    owners.add("owner@example.com", GOOD)
    owners.hasher = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    before = owners.all()[0]
    assert owners.authenticate("owner@example.com", GOOD) is not None
    after = owners.all()[0]
    assert after.password_hash != before.password_hash
    assert "m=16,t=2" in after.password_hash
    assert after.session_key == before.session_key  # still logged in


# -- the command -----------------------------------------------------------------


def test_users_add_asks_twice_and_never_echoes(cli):
    app, run = cli
    result = run("users", "add", "Owner@Example.com", input=f"{GOOD}\n{GOOD}\n")
    assert result.exit_code == 0, result.output
    assert "added owner@example.com" in result.output
    assert GOOD not in result.output
    assert [o.email for o in services_of(app).owners.all()] == ["owner@example.com"]


def test_users_add_with_two_different_passwords_asks_again(cli):
    app, run = cli
    result = run(
        "users",
        "add",
        "o@example.com",
        input=f"{GOOD}\nother one!!!!\n{GOOD}\n{GOOD}\n",
    )
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output.lower()


def test_users_add_from_a_password_file(cli, tmp_path):
    app, run = cli
    secret = tmp_path / "pw"
    secret.write_text(GOOD + "\n")
    result = run("users", "add", "o@example.com", "--password-file", str(secret))
    assert result.exit_code == 0, result.output
    assert services_of(app).owners.authenticate("o@example.com", GOOD) is not None


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("users", "add", "nobody"), "not an email address"),
        (("users", "remove", "o@example.com"), "no owner o@example.com"),
        (("users", "set-password", "o@example.com"), "no owner o@example.com"),
        (
            ("users", "add", "o@example.com", "--password-file", "/nonexistent"),
            "does not exist",
        ),
    ],
)
def test_users_commands_refuse_with_one_line(cli, tmp_path, args, says):
    _, run = cli
    result = run(*args, input=f"{GOOD}\n{GOOD}\n")
    assert result.exit_code != 0
    assert says in result.output
    assert "Traceback" not in result.output


def test_users_add_twice_says_use_set_password(cli):
    _, run = cli
    run("users", "add", "o@example.com", input=f"{GOOD}\n{GOOD}\n")
    result = run("users", "add", "o@example.com", input=f"{GOOD}\n{GOOD}\n")
    assert result.exit_code == 1
    assert "set-password" in result.output


def test_users_add_with_a_short_password_says_so(cli):
    app, run = cli
    result = run("users", "add", "o@example.com", input="short\nshort\n")
    assert result.exit_code == 1
    assert "at least 12 characters" in result.output
    assert services_of(app).owners.all() == []


def test_users_list_remove_and_set_password(cli):
    app, run = cli
    assert "no owners" in run("users", "list").output
    run("users", "add", "a@example.com", input=f"{GOOD}\n{GOOD}\n")
    run("users", "add", "b@example.com", input=f"{GOOD}\n{GOOD}\n")
    listing = run("users", "list").output
    assert "a@example.com" in listing and "b@example.com" in listing
    assert "never" in listing
    result = run("users", "set-password", "a@example.com", input="new password 1\n" * 2)
    assert result.exit_code == 0, result.output
    owners = services_of(app).owners
    assert owners.authenticate("a@example.com", "new password 1") is not None
    assert run("users", "remove", "b@example.com").exit_code == 0
    assert [o.email for o in owners.all()] == ["a@example.com"]
