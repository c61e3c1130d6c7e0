"""fieldmap: what the drop-in field names of other sites' forms mean."""

from __future__ import annotations

import pytest

from app.errors import Rejected
from app.fieldmap import MAX_FIELDS, MAX_VALUE, Interpreted, collect, interpret
from app.formdefs import FormDef
from config import parse_recipients

RECIPIENTS = parse_recipients(
    "sales=sales@example.com,support=help@example.org,press=press@example.net"
)
FORM = FormDef(id="default", recipients=("sales", "support"))
TEXT = ("message", "Hello")


def read(*pairs: tuple[str, str], form: FormDef = FORM) -> Interpreted:
    return interpret(list(pairs), form, RECIPIENTS)


def refused(*pairs: tuple[str, str], form: FormDef = FORM) -> Rejected:
    with pytest.raises(Rejected) as info:
        read(*pairs, form=form)
    return info.value


# -- collect ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([], []),
        ([("a", "1")], [("a", "1")]),
        ([("a", "1"), ("b", "2"), ("a", "3")], [("a", "1, 3"), ("b", "2")]),
        ([("x", ""), ("x", "y")], [("x", ", y")]),
        (
            [("b", "1"), ("a", "2"), ("b", "3"), ("b", "4")],
            [("b", "1, 3, 4"), ("a", "2")],
        ),
        ([("A", "1"), ("a", "2")], [("A", "1"), ("a", "2")]),
    ],
)
def test_collect_joins_repeated_names_in_first_position(pairs, expected):
    assert collect(pairs) == expected


# -- the field-name table -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "attribute", "value", "expected"),
    [
        ("_replyto", "reply_to", "ada@example.net", "ada@example.net"),
        ("email", "reply_to", "ada@example.net", "ada@example.net"),
        ("replyto", "reply_to", "ada@example.net", "ada@example.net"),
        ("EMAIL", "reply_to", "ada@example.net", "ada@example.net"),
        ("_ReplyTo", "reply_to", " ada@example.net ", "ada@example.net"),
        ("name", "name", "Ada Lovelace", "Ada Lovelace"),
        ("Name", "name", " Ada ", "Ada"),
        ("_subject", "subject", "Engines", "Engines"),
        ("subject", "subject", "Engines", "Engines"),
        ("title", "subject", "Engines", "Engines"),
        ("TITLE", "subject", "Engines", "Engines"),
        ("_next", "redirect", "/thanks.html", "/thanks.html"),
        ("redirect", "redirect", "/thanks.html", "/thanks.html"),
        ("redirectTo", "redirect", "/thanks.html", "/thanks.html"),
        ("redirectto", "redirect", "/thanks.html", "/thanks.html"),
        ("toemail", "recipient", "support", "support"),
        ("to", "recipient", "help@example.org", "support"),
        ("recipient", "recipient", "SUPPORT", "support"),
        ("To", "recipient", " Help@Example.org ", "support"),
        ("content", "message", "Hi\nthere", "Hi\nthere"),
        ("message", "message", "Hi", "Hi"),
        ("body", "message", "Hi", "Hi"),
        ("Message", "message", "  Hi  ", "Hi"),
    ],
)
def test_field_names(name, attribute, value, expected):
    found = read(("other", "x"), (name, value))
    assert getattr(found, attribute) == expected
    assert not found.honeypot


@pytest.mark.parametrize(
    ("pairs", "attribute", "expected"),
    [
        ([("email", "b@example.net"), ("_replyto", "a@example.net")], "reply_to", "a"),
        ([("_replyto", " "), ("email", "b@example.net")], "reply_to", "b"),
        ([("title", "T"), ("subject", "S"), ("_subject", "U")], "subject", "U"),
        ([("_subject", ""), ("title", "T")], "subject", "T"),
        ([("redirect", "/r"), ("_next", "/n")], "redirect", "/n"),
        ([("body", "B"), ("message", "M"), ("content", "C")], "message", "C"),
    ],
)
def test_first_non_empty_name_in_table_order_wins(pairs, attribute, expected):
    value = getattr(read(*pairs, ("x", "y")), attribute)
    assert value.startswith(expected)


def test_defaults_without_special_fields():
    found = read(TEXT)
    assert found == Interpreted(recipient="sales", fields=[TEXT], message="Hello")


def test_email_is_normalised_to_ascii():
    found = read(TEXT, ("email", "ada@bücher.example"))
    assert found.reply_to == "ada@xn--bcher-kva.example"


# -- recipients and copies ----------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "victim@evil.test",
        "sales@evil.test",
        "press",  # configured, but not one of this form's recipients
        "press@example.net",
        "sales,support",
        "sales@example.com.evil.test",
        "<sales@example.com>",
    ],
)
@pytest.mark.parametrize("name", ["toemail", "to", "recipient", "TO"])
def test_unknown_recipients_are_400_naming_the_field(name, value):
    error = refused(TEXT, (name, value))
    assert error.status == 400
    assert list(error.errors) == [name.lower()]


@pytest.mark.parametrize(
    ("pairs", "recipient", "cc", "ignored"),
    [
        ([("_cc", "support")], "sales", ["support"], []),
        ([("cc", "help@example.org")], "sales", ["support"], []),
        ([("_bcc", "Support")], "sales", ["support"], []),
        ([("bcc", "support"), ("_cc", "support")], "sales", ["support"], []),
        ([("_cc", "sales")], "sales", [], []),  # the recipient already has it
        ([("to", "support"), ("_cc", "sales, support")], "support", ["sales"], []),
        ([("_cc", "victim@evil.test")], "sales", [], ["victim@evil.test"]),
        ([("_cc", "press")], "sales", [], ["press"]),
        ([("_cc", " , ,")], "sales", [], []),
        (
            [("_cc", "victim@evil.test, support"), ("bcc", "x@evil.test")],
            "sales",
            ["support"],
            ["victim@evil.test", "x@evil.test"],
        ),
    ],
)
def test_copies_only_go_to_the_forms_recipients(pairs, recipient, cc, ignored):
    found = read(TEXT, *pairs)
    assert (found.recipient, found.cc, found.ignored_cc) == (recipient, cc, ignored)


def test_named_form_defaults_to_its_first_recipient():
    form = FormDef(id="press", recipients=("press", "sales"))
    assert read(TEXT, form=form).recipient == "press"
    assert read(TEXT, ("to", "press@example.net"), form=form).recipient == "press"


# -- honeypots ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["_gotcha", "_honey", "botcheck", "honeypot", "_GOTCHA", "BotCheck"]
)
def test_filled_honeypots(name):
    found = read(TEXT, (name, "x"))
    # Kept for an owner to release a false drop; the honeypot itself is not.
    assert found.honeypot and found.fields == [TEXT]


def test_a_honeypot_post_keeps_only_what_could_be_sent():
    """A bot's bad values are left out, never refused: it must see success."""
    found = read(
        ("email", "junk"),
        ("subject", "two\nlines"),
        ("message", "hello"),
        ("_gotcha", "x"),
    )
    assert found.honeypot
    assert (found.reply_to, found.subject, found.message) == ("", "", "hello")


def test_a_honeypot_wins_over_everything_else():
    """A bot is answered like success even when its post is otherwise bad."""
    found = read(("to", "victim@evil.test"), ("email", "junk"), ("_gotcha", "x"))
    assert found.honeypot


def test_forms_own_honeypot():
    form = FormDef(id="f", recipients=("sales",), honeypot="fax_number")
    assert read(TEXT, ("Fax_Number", "555"), form=form).honeypot
    found = read(TEXT, ("fax_number", ""), form=form)
    assert not found.honeypot and found.fields == [TEXT]


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_honeypots_are_not_shown(value):
    found = read(TEXT, ("_gotcha", value), ("honeypot", value))
    assert not found.honeypot
    assert found.fields == [TEXT]


# -- what the email shows -----------------------------------------------------


def test_shown_fields_keep_order_and_drop_steering_fields():
    pairs = [
        ("zeta", "1"),
        ("name", "Ada"),
        ("_template", "table"),
        ("email", "ada@example.net"),
        ("subject", "S"),
        ("_next", "/x"),
        ("redirect", "/y"),
        ("to", "support"),
        ("_cc", "sales"),
        ("cc", "sales"),
        ("_captcha", "false"),
        ("message", "Hi"),
        ("alpha", "2"),
    ]
    assert read(*pairs).fields == [
        ("zeta", "1"),
        ("name", "Ada"),
        ("email", "ada@example.net"),
        ("message", "Hi"),
        ("alpha", "2"),
    ]


@pytest.mark.parametrize(
    "token", ["cf-turnstile-response", "h-captcha-response", "g-recaptcha-response"]
)
def test_captcha_tokens_are_not_shown(token):
    assert read(("message", "Hi"), (token, "0.AbCdEf")).fields == [("message", "Hi")]


def test_values_are_shown_as_posted():
    pairs = [("Note", "  <b>x</b>\r\n"), ("message", "hi")]
    assert read(*pairs).fields == pairs


# -- limits and malformed posts (400) -----------------------------------------


def test_at_most_50_fields():
    pairs = [(f"f{i}", "x") for i in range(MAX_FIELDS)]
    assert len(read(*pairs).fields) == MAX_FIELDS
    error = refused(*pairs, ("one_more", "x"))
    assert error.status == 400 and "_form" in error.errors


@pytest.mark.parametrize(
    "name",
    ["", "a\nb", "a\rb", "a\x00b", "a\tb", "\x7f", "a\u2028b", "a\x85", "n" * 101],
)
def test_unusable_field_names_are_400(name):
    error = refused(TEXT, (name, "x"))
    assert error.status == 400 and "_form" in error.errors


def test_field_name_of_100_characters_is_fine():
    assert read(TEXT, ("n" * 100, "x")).fields[-1] == ("n" * 100, "x")


def test_value_over_20000_characters_is_400_naming_the_field():
    assert read(("message", "x" * MAX_VALUE)).message == "x" * MAX_VALUE
    error = refused(("message", "x" * (MAX_VALUE + 1)))
    assert error.status == 400 and list(error.errors) == ["message"]


@pytest.mark.parametrize("name", ["subject", "_subject", "title", "name", "email"])
@pytest.mark.parametrize(
    "value",
    [
        "a\r\nBcc: victim@evil.test",
        "a\nb",
        "a\rb",
        "a\x00",
        "a\tb",
        "a\u2028b",
        "=?utf-8?q?a=0D=0ABcc:_victim@evil.test?=",
        "=?utf-8?b?SGk=?=",
    ],
)
def test_header_bound_values_with_breaks_or_encoded_words_are_400(name, value):
    error = refused(TEXT, (name, value))
    assert error.status == 400
    assert name in error.errors


def test_over_long_subject_and_name_are_400():
    assert read(TEXT, ("subject", "s" * 200)).subject == "s" * 200
    assert refused(TEXT, ("subject", "s" * 201)).errors.keys() == {"subject"}
    assert read(TEXT, ("name", "n" * 100)).name == "n" * 100
    assert refused(TEXT, ("name", "n" * 101)).errors.keys() == {"name"}


def test_malformed_wins_over_unprocessable():
    """A header injection attempt is 400 even when the address is also bad."""
    error = refused(TEXT, ("subject", "a\nb"), ("email", "not an address"))
    assert error.status == 400
    assert error.errors.keys() == {"subject"}


# -- unprocessable posts (422) ------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["not an address", "ada@", "@example.net", "ada@example", "ada@@example.net"],
)
@pytest.mark.parametrize("name", ["email", "_replyto"])
def test_bad_email_is_422(name, value):
    error = refused(TEXT, (name, value))
    assert error.status == 422
    assert error.errors.keys() == {name}


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("message", "")],
        [("message", "  \n ")],
        [("_next", "/x"), ("to", "sales"), ("_subject", "Hi")],
        [("_template", "table")],
    ],
)
def test_empty_form_is_422(pairs):
    error = refused(*pairs)
    assert error.status == 422 and "_form" in error.errors


def test_required_fields_are_422_each_named():
    form = FormDef(id="f", recipients=("sales",), required=("Email", "phone"))
    error = refused(("message", "hi"), ("phone", " "), form=form)
    assert error.status == 422
    assert error.errors == {
        "Email": "Please fill in Email: this form requires it.",
        "phone": "Please fill in phone: this form requires it.",
    }
    assert error.codes == {
        "Email": "REQUIRED_FIELD_MISSING",
        "phone": "REQUIRED_FIELD_MISSING",
    }
    found = read(("EMAIL", "ada@example.net"), ("Phone", "1"), form=form)
    assert found.reply_to == "ada@example.net"


def test_required_and_bad_email_are_reported_together():
    form = FormDef(id="f", recipients=("sales",), required=("phone",))
    error = refused(("email", "nope"), ("message", "hi"), form=form)
    assert error.status == 422
    assert error.errors.keys() == {"email", "phone"}
