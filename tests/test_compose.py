"""The pure message builder: headers, parts, escaping and the exact wire bytes."""

from __future__ import annotations

import email
import email.policy
import html
import re
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.compose import (
    PLAIN_ADDRESS,
    Submission,
    UnsafeHeaderError,
    compose,
    compose_autoresponse,
    header_text_problem,
    new_message_id,
    normalize_newlines,
    reply_address,
)
from app.message import Envelope

MAIL_FROM = Address("Contact form", addr_spec="forms@example.com")
RECIPIENT = Address(addr_spec="sales@example.com")
DATE = datetime(2024, 5, 1, 12, 30, 15, tzinfo=UTC)
MESSAGE_ID = "<fixed.1234@example.com>"


def submission(**fields: str) -> Submission:
    values = {
        "subject": "A question",
        "message": "Hello,\nhow are you?",
        "name": "Ada Lovelace",
        "email": "ada@example.net",
    }
    values.update(fields)
    return Submission(recipient=RECIPIENT, **values)


def parse(data: bytes) -> EmailMessage:
    """Parse wire bytes with the email package, as a receiver would."""
    return email.message_from_bytes(data, policy=email.policy.default)


def compose_msg(sub: Submission, **kwargs) -> EmailMessage:
    """Compose and parse the result back."""
    return parse(compose(sub, **kwargs).data)


def build(sub: Submission) -> tuple[EmailMessage, Envelope, EmailMessage]:
    """Compose and parse the wire bytes back as a receiver would."""
    env = compose(sub, mail_from=MAIL_FROM, message_id=MESSAGE_ID, date=DATE)
    parsed = parse(env.data)
    return parsed, env, parsed


def text_of(msg: EmailMessage, subtype: str) -> str:
    """The decoded content of the text/<subtype> part, with LF line ends."""
    part = msg.get_body((subtype,))
    assert part is not None
    return part.get_content().replace("\r\n", "\n")


def with_sender(sub: Submission, text: str) -> str:
    """The text part: who wrote (name and address, when given) above `text`."""
    if sub.name and sub.email:
        return f"From: {sub.name} <{sub.email}>\n\n{text}"
    sender = sub.name or sub.email
    return f"From: {sender}\n\n{text}" if sender else text


def as_mime_text(typed: str) -> str:
    """What a text part carries for `typed`: MIME text ends with a line break."""
    text = normalize_newlines(typed)
    return text if text.endswith("\n") else text + "\n"


def rfc2047_display_name(data: bytes, header: str) -> str:
    """Decode a header's display name strictly by RFC 2047.

    Python's address parser keeps the folding space between two encoded
    words of one name (its own output does not round-trip either); RFC 2047
    6.2 and mail readers drop it, as email.header.decode_header does.
    """
    for line in header_block(data):
        name, _, value = line.decode("ascii").partition(": ")
        if name == header:
            phrase = value.rsplit(" <", 1)[0]
            if phrase.startswith('"'):
                return phrase[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            return str(make_header(decode_header(phrase)))
    raise AssertionError(f"no {header} header")


def header_block(data: bytes) -> list[bytes]:
    """The top-level header lines of `data`, unfolded."""
    head = data.split(b"\r\n\r\n", 1)[0]
    return re.sub(rb"\r\n[ \t]", b" ", head).split(b"\r\n")


# --- headers --------------------------------------------------------------------


def test_headers():
    _, _, parsed = build(submission())
    assert parsed["From"] == "Contact form <forms@example.com>"
    (sender,) = parsed["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (
        "Contact form",
        "forms@example.com",
    )
    assert [a.addr_spec for a in parsed["To"].addresses] == ["sales@example.com"]
    (reply_to,) = parsed["Reply-To"].addresses
    assert (reply_to.display_name, reply_to.addr_spec) == (
        "Ada Lovelace",
        "ada@example.net",
    )
    assert parsed["Subject"] == "A question"
    assert parsed["Date"] == "Wed, 01 May 2024 12:30:15 +0000"
    assert parsed["Date"].datetime == DATE
    assert parsed["Message-ID"] == MESSAGE_ID
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["MIME-Version"] == "1.0"


def test_date_keeps_the_offset_it_is_given():
    date = datetime(2024, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5)))
    msg = compose_msg(
        submission(), mail_from=MAIL_FROM, message_id=MESSAGE_ID, date=date
    )
    assert msg["Date"] == "Tue, 31 Dec 2024 23:59:00 -0500"
    assert msg["Date"].datetime == date


def test_visitor_never_becomes_the_sender():
    """DMARC: From and the envelope sender are ours, the visitor only in Reply-To."""
    _, env, parsed = build(submission(email="mallory@evil.example"))
    assert "evil" not in str(parsed["From"])
    assert env.mail_from == "forms@example.com"
    assert env.recipients == ("sales@example.com",)
    assert parsed.get_all("Sender") is None


def test_no_reply_to_without_email():
    _, _, parsed = build(submission(email=""))
    assert parsed.get_all("Reply-To") is None
    assert parsed["From"] == "Contact form <forms@example.com>"


def test_reply_to_without_name_is_the_bare_address():
    _, _, parsed = build(submission(name=""))
    assert parsed["Reply-To"] == "ada@example.net"


@pytest.mark.parametrize(
    "name",
    [
        "Evil, <attacker@evil.example>",
        'Mallory" <m@evil.example>, "x',
        'a\\b"c',
        "Bcc: m@evil.example",
    ],
)
def test_name_cannot_add_a_reply_to_address(name):
    _, env, parsed = build(submission(name=name))
    (reply_to,) = parsed["Reply-To"].addresses
    assert reply_to.addr_spec == "ada@example.net"
    assert reply_to.display_name == name
    assert parsed.get_all("Bcc") is None
    assert env.recipients == ("sales@example.com",)


def test_no_cc_or_bcc_headers():
    _, _, parsed = build(
        submission(subject="Cc: a@evil.example", name="Bcc: b@evil.example")
    )
    for name in ("Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc"):
        assert parsed.get_all(name) is None
    assert parsed.keys().count("To") == 1


def test_long_subject_stays_one_header():
    """200 characters are folded over several lines but unfold into one Subject."""
    subject = ("Bcc: evil@example.org To: x@example.org " * 5)[:200].strip()
    assert len(subject) >= 199
    _, env, parsed = build(submission(subject=subject))
    assert parsed["Subject"] == subject
    assert parsed.get_all("Bcc") is None
    assert parsed.get_all("Subject") == [subject]
    names = [line.split(b":", 1)[0] for line in header_block(env.data)]
    assert names.count(b"Subject") == 1
    assert names.count(b"To") == 1
    assert b"Bcc" not in names
    assert set(names) <= {
        b"From",
        b"To",
        b"Reply-To",
        b"Subject",
        b"Date",
        b"Message-ID",
        b"Auto-Submitted",
        b"Content-Language",
        b"MIME-Version",
        b"Content-Type",
    }


@pytest.mark.parametrize("field", ["subject", "name", "email"])
@pytest.mark.parametrize(
    "value",
    [
        "x\r\nBcc: evil@example.org",
        "x\nBcc: evil@example.org",
        "x\rBcc: evil@example.org",
        "x\x00y",
        "x\ty",
        "x\x85y",
        "x\u2028Bcc: evil@example.org",
        "x\u2029y",
        "=?utf-8?q?a=0D=0ABcc:_evil@example.org?=",
    ],
)
def test_header_breaking_input_is_refused(field, value):
    """The form rejects these first; compose refuses them as a last defence."""
    assert header_text_problem(value)
    with pytest.raises(UnsafeHeaderError):
        compose(
            submission(**{field: value}),
            mail_from=MAIL_FROM,
            message_id=MESSAGE_ID,
            date=DATE,
        )


@pytest.mark.parametrize(
    "email",
    [
        "ada@example.net>, evil@example.org",
        "ada lovelace@example.net",
        "<a@b.c>",
        "a..b@example.net",
        ".ada@example.net",
        "ada@[127.0.0.1]",
    ],
)
def test_reply_to_must_be_a_checked_address(email):
    """Anything but a plain address is refused rather than written into Reply-To."""
    with pytest.raises(UnsafeHeaderError):
        compose(
            submission(email=email),
            mail_from=MAIL_FROM,
            message_id=MESSAGE_ID,
            date=DATE,
        )


@pytest.mark.parametrize(
    "value", ["Plain text", "Zoë 李 👩‍💻", "a = b? c", "50% off = ?", ""]
)
def test_ordinary_header_text_has_no_problem(value):
    assert header_text_problem(value) is None


# --- Message-ID -------------------------------------------------------------------


def test_new_message_id_on_sender_domain_and_unique():
    ids = {new_message_id(MAIL_FROM) for _ in range(100)}
    assert len(ids) == 100
    for mid in ids:
        assert re.fullmatch(r"<[^<>@\s]+@example\.com>", mid)


def test_message_id_is_the_one_passed_in():
    """A retry rebuilds the message with the stored id: it must come out unchanged."""
    mid = new_message_id(MAIL_FROM)
    first = compose(submission(), mail_from=MAIL_FROM, message_id=mid, date=DATE)
    again = compose(submission(), mail_from=MAIL_FROM, message_id=mid, date=DATE)
    for env in (first, again):
        assert parse(env.data)["Message-ID"] == mid
        assert env.message_id == mid


# --- structure and content --------------------------------------------------------


def test_multipart_alternative_text_then_html():
    _, _, parsed = build(submission())
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert [p.get_content_charset() for p in parts] == ["utf-8", "utf-8"]


TRICKY = (
    'Dear team,\r\n\r\n  indented <script>alert(1)</script> & "quoted"\r\n'
    "Fish & chips > 3 < 4\rlast line"
)


def test_text_part_is_the_message_as_typed():
    """Not escaped, not re-wrapped; only CRLF and lone CR become LF."""
    sub = submission(message=TRICKY)
    _, _, parsed = build(sub)
    expected = (
        'Dear team,\n\n  indented <script>alert(1)</script> & "quoted"\n'
        "Fish & chips > 3 < 4\nlast line\n"
    )
    assert as_mime_text(TRICKY) == expected
    assert text_of(parsed, "plain") == with_sender(sub, expected)


@pytest.mark.parametrize("typed", ["ends with newline\n", "two\n\n", "x\n\n\n  \n"])
def test_text_part_keeps_trailing_lines(typed):
    sub = submission(message=typed)
    _, _, parsed = build(sub)
    assert text_of(parsed, "plain") == with_sender(sub, typed)


def test_html_part_escapes_the_message():
    _, _, parsed = build(submission(message=TRICKY))
    body = text_of(parsed, "html")
    assert "<script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "Fish &amp; chips &gt; 3 &lt; 4" in body
    assert '"quoted"' not in body
    assert "&#34;quoted&#34;" in body or "&quot;quoted&quot;" in body


def test_html_part_keeps_line_breaks():
    _, _, parsed = build(submission(message="one\r\ntwo\n\nfour"))
    body = text_of(parsed, "html")
    assert "one<br>\ntwo<br>\n<br>\nfour" in body


def test_html_part_escapes_name_email_and_subject():
    _, _, parsed = build(
        submission(name="<b>Bold</b> & Co", subject='<i>Hi</i> & "bye"')
    )
    body = text_of(parsed, "html")
    assert "<b>" not in body and "<i>" not in body
    assert "&lt;b&gt;Bold&lt;/b&gt; &amp; Co &lt;ada@example.net&gt;" in body
    title = re.search(r"<title>(.*)</title>", body).group(1)
    assert "<" not in title and '"' not in title
    assert html.unescape(title) == '<i>Hi</i> & "bye"'


def test_html_part_without_name_or_email_has_no_sender_line():
    _, _, parsed = build(submission(name="", email=""))
    assert "From " not in text_of(parsed, "html")


UNICODE = {
    "subject": "Grüße — 你好 👩‍💻 café ñ",
    "name": "Zoë 李小龙 👩‍💻",
    "message": "Ça va? 你好世界\nEmoji: 👩‍💻 🇫🇷 👍🏽\nÅngström",
}


def test_utf8_round_trip():
    sub = submission(**UNICODE)
    _, _, parsed = build(sub)
    assert parsed["Subject"] == UNICODE["subject"]
    assert parsed["Reply-To"].addresses[0].display_name == UNICODE["name"]
    assert text_of(parsed, "plain") == with_sender(sub, UNICODE["message"] + "\n")
    body = text_of(parsed, "html")
    assert UNICODE["name"] in body
    assert "Emoji: 👩\u200d💻 🇫🇷 👍🏽<br>" in body
    assert f"<title>{UNICODE['subject']}</title>" in body


# --- the wire ---------------------------------------------------------------------


def assert_wire_safe(data: bytes) -> None:
    """CRLF line ends only, lines of at most 998 octets, 7-bit throughout."""
    assert data.endswith(b"\r\n")
    lines = data.split(b"\r\n")[:-1]
    for line in lines:
        assert b"\r" not in line and b"\n" not in line, line
        assert len(line) <= 998, len(line)
        assert line.isascii(), line
        assert b"\x00" not in line


@pytest.mark.parametrize(
    "fields",
    [
        {},
        UNICODE,
        {"subject": "é" * 200, "name": "李" * 100},
        {"message": "x" * 5000 + "\n" + "ü" * 5000 + "\n" + "👩‍💻" * 1000},
        {"message": "trailing spaces   \nand tabs\t\t\nend"},
        {"message": "\r\n".join(["line"] * 2000)},
    ],
    ids=["ascii", "unicode", "long-headers", "long-lines", "whitespace", "many"],
)
def test_wire_bytes_are_crlf_short_and_7bit(fields):
    """No relay needs to re-encode the message (which would break DKIM)."""
    sub = submission(**fields)
    msg, env, parsed = build(sub)
    assert_wire_safe(env.data)
    assert parsed["Subject"] == fields.get("subject", "A question")
    assert parsed["Reply-To"].addresses[0].addr_spec == "ada@example.net"
    assert rfc2047_display_name(env.data, "Reply-To") == fields.get(
        "name", "Ada Lovelace"
    )
    expected = as_mime_text(fields.get("message", "Hello,\nhow are you?"))
    assert text_of(parsed, "plain") == with_sender(sub, expected)


def test_envelope_recipients_are_to_and_cc_from_configuration():
    sub = Submission(
        recipient=Address("One", addr_spec="one@example.com"),
        subject="s",
        message="m",
        cc=(Address(addr_spec="two@example.org"),),
    )
    env = compose(sub, mail_from=MAIL_FROM, message_id=MESSAGE_ID, date=DATE)
    assert env.recipients == ("one@example.com", "two@example.org")
    assert env.mail_from == "forms@example.com"
    assert env.message_id == MESSAGE_ID
    parsed = parse(env.data)
    assert parsed["To"] == "One <one@example.com>"
    assert parsed["Cc"] == "two@example.org"


def test_the_same_input_gives_the_same_message_but_a_new_boundary():
    """Stored once, sent as stored: only the MIME boundary is random."""
    one = compose(submission(), mail_from=MAIL_FROM, message_id=MESSAGE_ID, date=DATE)
    two = compose(submission(), mail_from=MAIL_FROM, message_id=MESSAGE_ID, date=DATE)
    assert one.data != two.data
    assert [(k, str(v)) for k, v in parse(one.data).items() if k != "Content-Type"] == [
        (k, str(v)) for k, v in parse(two.data).items() if k != "Content-Type"
    ]


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("a\r\nb", "a\nb"),
        ("a\rb", "a\nb"),
        ("a\nb", "a\nb"),
        ("a\n\rb", "a\n\nb"),
        ("\r\r\n", "\n\n"),
        ("\r\n\r\n", "\n\n"),
        ("no breaks", "no breaks"),
        ("", ""),
    ],
)
def test_normalize_newlines(typed, expected):
    assert normalize_newlines(typed) == expected


# --- property ---------------------------------------------------------------------

# What the form lets through to a header: stripped, no control characters and
# no line or paragraph separators. Encoded words are refused by compose itself.
header_text = (
    st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")))
    .map(str.strip)
    .filter(lambda value: header_text_problem(value) is None)
)


@settings(max_examples=200, deadline=None)
@given(
    subject=header_text.filter(bool),
    name=header_text,
    body=st.text(st.characters(exclude_categories=("Cs",))),
    visitor=st.sampled_from(["", "visitor@example.net"]),
)
def test_any_text_round_trips_without_new_headers(subject, name, body, visitor):
    sub = submission(subject=subject, name=name, message=body, email=visitor)
    _, env, parsed = build(sub)
    assert len(parsed.get_all("From")) == 1
    assert parsed["From"] == "Contact form <forms@example.com>"
    assert len(parsed.get_all("To")) == 1
    assert parsed.get_all("Cc") is None
    assert parsed.get_all("Bcc") is None
    if visitor:
        (reply_to,) = parsed["Reply-To"].addresses
        assert reply_to.addr_spec == visitor
    else:
        assert parsed.get_all("Reply-To") is None
    assert parsed["Subject"] == subject
    assert text_of(parsed, "plain") == with_sender(sub, as_mime_text(body))
    assert env.recipients == ("sales@example.com",)
    assert_wire_safe(env.data)


@settings(max_examples=300, deadline=None)
@given(
    subject=st.text(alphabet=" ab,.x", min_size=60, max_size=200).map(str.strip),
)
def test_long_ascii_subjects_fold_and_unfold_exactly(subject):
    """Folding at spaces (runs of spaces included) must unfold to the original."""
    if not subject:
        return
    env = compose(
        submission(subject=subject),
        mail_from=MAIL_FROM,
        message_id=MESSAGE_ID,
        date=DATE,
    )
    assert_wire_safe(env.data)
    assert parse(env.data)["Subject"] == subject


def test_control_check_matches_the_unicode_categories_exactly():
    """The fast regex refuses exactly categories Cc, Zl and Zp, all code points."""
    import sys
    import unicodedata

    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        unsafe = unicodedata.category(ch) in ("Cc", "Zl", "Zp")
        assert bool(header_text_problem(f"a{ch}b")) == unsafe, hex(code)


# --- the visitor's address ------------------------------------------------------


def _reference(value: str) -> str | None:
    try:
        info = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    return info.ascii_email or info.normalized


def _ours(value: str) -> str | None:
    try:
        return reply_address(value)
    except EmailNotValidError:
        return None


_PIECES = st.sampled_from(
    ["a", "Z", "0", "9", ".", "..", "-", "--", "+", "_", "'", "@", "xn--", "é", " ",
     "com", "net", "local", "localhost", "test", "1", "x" * 63, "y" * 64, "\"", "("]
)  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(
    local=st.lists(_PIECES, min_size=0, max_size=6).map("".join),
    host=st.lists(_PIECES, min_size=0, max_size=8).map("".join),
)
@example(local="Ada.Lovelace", host="Example.NET")
@example(local="a", host="b.c")
@example(local="a", host="foo.local")
@example(local="a", host="x--y.com")
@example(local="a", host="b.123")
@example(local="a" * 65, host="example.com")
@example(local="a", host=("x" * 63 + ".") * 4 + "com")
def test_reply_address_agrees_with_email_validator(local, host):
    """The quick path for everyday addresses gives email_validator's answer."""
    value = f"{local}@{host}"
    ours = _ours(value)
    assert ours == _reference(value)
    # Whatever it accepts, compose takes as a checked Reply-To address.
    assert ours is None or PLAIN_ADDRESS.fullmatch(ours)


def test_everyday_reply_address_is_normalised():
    assert reply_address("Ada.Lovelace+forms@Example.NET") == (
        "Ada.Lovelace+forms@example.net"
    )


# -- the autoresponse to a visitor ---------------------------------------------


def autoresponse(**kw: str) -> Envelope:
    values = {
        "to": "ada@example.net",
        "subject": "We got your message",
        "body": "Thank you.\nWe answer within two working days.",
    }
    values.update(kw)
    return compose_autoresponse(
        mail_from=MAIL_FROM, message_id=MESSAGE_ID, date=DATE, **values
    )


def test_autoresponse_headers_follow_rfc_3834():
    env = autoresponse()
    msg = parse(env.data)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["From"] == "Contact form <forms@example.com>"
    assert msg["To"] == "ada@example.net"
    assert msg["Subject"] == "We got your message"
    assert msg["Message-ID"] == MESSAGE_ID
    assert msg["Reply-To"] is None
    assert env.recipients == ("ada@example.net",)
    assert env.mail_from == "forms@example.com"
    text = msg.get_content().replace("\r\n", "\n")
    assert text == "Thank you.\nWe answer within two working days.\n"


@pytest.mark.parametrize(
    "to",
    ["ada@example.net\r\nBcc: x@evil.example", "Ada <ada@example.net>", "a,b@c.d"],
)
def test_autoresponse_refuses_an_unchecked_address(to):
    with pytest.raises(UnsafeHeaderError):
        autoresponse(to=to)


def test_autoresponse_subject_cannot_add_headers():
    with pytest.raises(UnsafeHeaderError):
        autoresponse(subject="Thanks\r\nBcc: x@evil.example")
