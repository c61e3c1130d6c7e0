"""i18n: which language each page, JSON answer and email is in, and the catalogues.

The matrix runs through the real factory and the real catalogues; emails go
through the real relay and are parsed back as a receiver would.
"""

from __future__ import annotations

import io
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask

from app.languages import DEFAULT_LOCALE, LANGUAGES, html_tag, match_locale

from .consolekit import log_in, with_owner
from .helpers import CSRF_RE, FORM_TOKEN_RE, deliver, post_form
from .relay import Relay

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "app" / "translations"
# Every shipped language but the source one has a catalogue.
TRANSLATED = [locale for locale in LANGUAGES if locale != DEFAULT_LOCALE]
SITE = "https://www.example.com"

# A few words of each page, per language: enough to tell them apart.
HEADING = {"en": "Send us a message", "zh_Hans_CN": "给我们留言"}


def html_lang(page: str) -> str:
    start = page.index('<html lang="') + len('<html lang="')
    return page[start : page.index('"', start)]


@pytest.fixture
def forms_app(make_app, relay: Relay, tmp_path) -> Flask:
    """An app with a Chinese form, an English one and one that sets nothing."""
    forms = tmp_path / "forms.toml"
    forms.write_text(
        f"""
[forms.zh]
recipients = ["sales"]
allowed_origins = ["{SITE}"]
language = "zh-CN"

[forms.en]
recipients = ["sales"]
allowed_origins = ["{SITE}"]
language = "en"

[forms.plain]
recipients = ["sales"]
allowed_origins = ["{SITE}"]
""",
        encoding="utf-8",
    )
    return make_app(relay.env(FORMS_FILE=str(forms), ALLOWED_ORIGINS=SITE))


# -- tags -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "locale"),
    [
        ("en", "en"),
        ("EN-gb", "en"),
        ("zh-CN", "zh_Hans_CN"),
        ("zh_cn", "zh_Hans_CN"),
        ("zh-Hans-CN", "zh_Hans_CN"),
        ("zh", "zh_Hans_CN"),
        ("zh-TW", "zh_Hans_CN"),
        ("fr", None),
        ("*", None),
        ("", None),
        ("-", None),
    ],
)
def test_match_locale(tag, locale):
    assert match_locale(tag) == locale


def test_every_shipped_language_has_a_tag():
    assert html_tag("zh_Hans_CN") == "zh-CN"
    assert html_tag("en") == "en"


# -- the hosted form: ?lang= > Accept-Language > English ------------------------


@pytest.mark.parametrize(
    ("query", "accept", "expected"),
    [
        ("", None, "en"),
        ("", "zh-CN,zh;q=0.9,en;q=0.8", "zh_Hans_CN"),
        ("", "zh", "zh_Hans_CN"),
        ("", "zh-TW", "zh_Hans_CN"),
        ("", "en-US,en;q=0.9", "en"),
        ("", "fr-FR,zh;q=0.5", "zh_Hans_CN"),
        ("", "fr-FR,de;q=0.5", "en"),
        ("", "en;q=0.2,zh-CN;q=0.9", "zh_Hans_CN"),
        ("", "zh;q=0,fr", "en"),
        ("", "*", "en"),
        ("", ";;;,=,q=x", "en"),
        ("?lang=zh-CN", None, "zh_Hans_CN"),
        ("?lang=zh-CN", "en-US", "zh_Hans_CN"),
        ("?lang=en", "zh-CN", "en"),
        ("?lang=klingon", "zh-CN", "zh_Hans_CN"),
        ("?lang=klingon", None, "en"),
        ("?lang=" + "x" * 200, None, "en"),
        ("?lang=", "zh-CN", "zh_Hans_CN"),
    ],
)
def test_hosted_form_language(client, query, accept, expected):
    headers = {"Accept-Language": accept} if accept is not None else {}
    response = client.get("/" + query, headers=headers)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert html_lang(page) == html_tag(expected)
    assert HEADING[expected] in page
    for other, heading in HEADING.items():
        if other != expected:
            assert heading not in page


def test_lang_is_kept_across_the_post(client, relay):
    page = client.get("/?lang=zh-CN").get_data(as_text=True)
    assert 'action="/?lang=zh-CN"' in page
    data = {
        "recipient": "sales",
        "subject": "",
        "message": "你好",
        "csrf_token": CSRF_RE.search(page).group(1),
        "form_token": FORM_TOKEN_RE.search(page).group(1),
    }
    # The browser posts to the action: the refusal comes back in Chinese.
    refused = client.post("/?lang=zh-CN", data=data)
    assert refused.status_code == 400
    text = refused.get_data(as_text=True)
    assert "请填写主题。" in text
    assert "请更正标出的字段。" in text
    assert html_lang(text) == "zh-CN"

    data["subject"] = "咨询"
    sent = client.post("/?lang=zh-CN", data=data)
    assert sent.status_code == 303
    assert sent.headers["Location"].endswith("/thanks?lang=zh-CN")
    thanks = client.get(sent.headers["Location"]).get_data(as_text=True)
    assert "您的留言已收到" in thanks
    assert 'href="/?lang=zh-CN"' in thanks


def test_english_without_any_choice_says_nothing_about_lang(client):
    page = client.get("/").get_data(as_text=True)
    assert 'action="/"' in page
    assert "lang=" not in page.replace('<html lang="en">', "")


def test_validation_numbers_follow_the_locale(client):
    page = client.get("/?lang=zh-CN").get_data(as_text=True)
    response = client.post(
        "/?lang=zh-CN",
        data={
            "recipient": "sales",
            "subject": "主题",
            "message": "m" * 20_001,
            "csrf_token": CSRF_RE.search(page).group(1),
            "form_token": FORM_TOKEN_RE.search(page).group(1),
        },
    )
    assert response.status_code == 400
    assert "留言不能超过 20,000 个字符。" in response.get_data(as_text=True)


# -- /f/<form>: ?lang= > Accept-Language > the form's language > English ------


@pytest.mark.parametrize(
    ("form", "query", "accept", "expected"),
    [
        ("zh", "", None, "zh_Hans_CN"),
        ("zh", "", "fr", "zh_Hans_CN"),
        ("zh", "", "en-US", "en"),
        ("zh", "?lang=en", "zh-CN", "en"),
        ("en", "", None, "en"),
        ("en", "", "zh-CN", "zh_Hans_CN"),
        ("en", "?lang=zh-CN", None, "zh_Hans_CN"),
        ("plain", "", None, "en"),
        ("plain", "", "zh", "zh_Hans_CN"),
        ("plain", "?lang=bogus", "bogus", "en"),
    ],
)
def test_endpoint_json_messages(forms_app, form, query, accept, expected):
    headers = {"Origin": SITE}
    if accept is not None:
        headers["Accept-Language"] = accept
    response = forms_app.test_client().post(
        f"/f/{form}{query}", json={}, headers=headers
    )
    assert response.status_code == 422
    body = response.get_json()
    empty = {
        "en": "The form arrived empty. Please fill it in and send it again.",
        "zh_Hans_CN": "收到的表单是空的。请填写后重新提交。",
    }
    assert body["message"] == empty[expected]
    # The machine-readable code stays English, whatever the language.
    assert body["errors"] == [
        {"field": None, "code": "EMPTY", "message": empty[expected]}
    ]


def test_endpoint_success_message_in_chinese(forms_app):
    response = forms_app.test_client().post(
        "/f/zh", json={"message": "你好"}, headers={"Origin": SITE}
    )
    assert response.status_code == 200
    assert response.get_json()["message"] == "谢谢！我们已收到您的留言。"


def test_endpoint_refusals_in_chinese(forms_app):
    client = forms_app.test_client()
    chinese = {"Accept-Language": "zh-CN", "Accept": "application/json"}
    wrong_site = client.post(
        "/f/plain",
        json={"message": "x"},
        headers={**chinese, "Origin": "https://evil.test"},
    )
    assert wrong_site.get_json()["message"] == "此网站无权向该表单提交。"
    assert wrong_site.get_json()["errors"][0]["code"] == "ORIGIN_NOT_ALLOWED"
    missing = client.post("/f/nothing", json={}, headers={**chinese, "Origin": SITE})
    assert missing.status_code == 404
    assert missing.get_json()["message"] == "此地址没有对应的表单。"
    bad_json = client.post(
        "/f/plain",
        data=b"{not json",
        headers={**chinese, "Origin": SITE, "Content-Type": "application/json"},
    )
    assert bad_json.status_code == 400
    assert "不是有效的 JSON" in bad_json.get_json()["message"]


def test_endpoint_pages_in_chinese(forms_app):
    client = forms_app.test_client()
    refused = client.post("/f/zh", data={"x": ""}, headers={"Origin": SITE})
    page = refused.get_data(as_text=True)
    assert refused.status_code == 422
    assert html_lang(page) == "zh-CN"
    assert "请检查表单" in page
    assert "返回表单" in page
    sent = client.post("/f/zh", data={"message": "你好"}, headers={"Origin": SITE})
    assert sent.status_code == 303
    thanks = client.get(sent.headers["Location"]).get_data(as_text=True)
    assert "您的留言已收到" in thanks
    assert html_lang(thanks) == "zh-CN"


def test_error_page_in_chinese(client):
    response = client.get("/no-such-page", headers={"Accept-Language": "zh-CN"})
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert html_lang(page) == "zh-CN"
    assert "页面不存在" in page
    assert "此地址没有对应的页面。" in page


# -- FORMS_FILE: language is parsed strictly -------------------------------------


@pytest.mark.parametrize("value", ['"fr"', '"zh-XX"', "3", '""', '["zh-CN"]'])
def test_unknown_form_language_is_refused(make_app, relay, tmp_path, value):
    from config import ConfigError

    forms = tmp_path / "forms.toml"
    forms.write_text(
        f'[forms.contact]\nrecipients = ["sales"]\nlanguage = {value}\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        make_app(relay.env(FORMS_FILE=str(forms)))
    message = str(caught.value)
    assert "'contact'" in message
    assert "language" in message
    assert "zh-CN" in message


# -- the catalogues -----------------------------------------------------------------


def _catalogue(locale: str):
    path = TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as fh:
        return read_po(fh, locale=locale)


def _extracted(tmp_path: Path) -> set[str]:
    """Extract the msgids from the sources, as `make messages` does."""
    pot = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "_l",
            "-k",
            "lazy_gettext",
            "--no-location",
            "-o",
            str(pot),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with pot.open("rb") as fh:
        return {_msgid(m) for m in read_po(fh) if m.id}


def _msgid(message) -> str:
    return message.id[0] if isinstance(message.id, tuple) else message.id


@pytest.mark.parametrize("locale", TRANSLATED)
def test_catalogue_translates_every_string(locale):
    """Fail naming every msgid with no translation, or only a fuzzy one."""
    untranslated = []
    for message in _catalogue(locale):
        if not message.id:
            continue
        strings = (
            message.string if isinstance(message.string, tuple) else (message.string,)
        )
        if message.fuzzy or not all(strings):
            untranslated.append(_msgid(message))
    assert not untranslated, (
        f"{len(untranslated)} string(s) not translated (or fuzzy) in {locale}; "
        "translate them in app/translations/"
        f"{locale}/LC_MESSAGES/messages.po:\n  " + "\n  ".join(untranslated)
    )


@pytest.mark.parametrize("locale", TRANSLATED)
def test_catalogue_placeholders_match(locale):
    problems = [
        f"{_msgid(message)!r}: {error}"
        for message, errors in _catalogue(locale).check()
        for error in errors
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("locale", TRANSLATED)
def test_catalogue_is_up_to_date_with_the_sources(locale, tmp_path):
    """The .po holds exactly the strings in the sources: run `make messages`."""
    extracted = _extracted(tmp_path)
    catalogued = {_msgid(m) for m in _catalogue(locale) if m.id}
    new = sorted(extracted - catalogued)
    gone = sorted(catalogued - extracted)
    assert not new and not gone, (
        f"app/translations/{locale} is out of date with the sources; run "
        "`make messages`, then translate.\n"
        "In the sources, not in the catalogue:\n  "
        + "\n  ".join(new or ["(none)"])
        + "\nIn the catalogue, no longer in the sources:\n  "
        + "\n  ".join(gone or ["(none)"])
    )


@pytest.mark.parametrize("locale", TRANSLATED)
def test_compiled_catalogue_matches_the_po(locale):
    """The committed .mo is the .po compiled: run `make translations`."""
    compiled = io.BytesIO()
    write_mo(compiled, _catalogue(locale))
    mo = TRANSLATIONS / locale / "LC_MESSAGES" / "messages.mo"
    assert mo.read_bytes() == compiled.getvalue(), (
        f"{mo} is stale: run `make translations`"
    )


# -- the email: labels follow the form, never the visitor -------------------------


def _one_mail(app: Flask, relay: Relay) -> EmailMessage:
    assert deliver(app) == 1
    (got,) = relay.received
    # Every byte on the wire is 7-bit: headers as RFC 2047 words, bodies as
    # quoted-printable, so no relay needs SMTPUTF8 or 8BITMIME.
    assert got.data.isascii()
    return got.message


@pytest.mark.parametrize(
    ("form", "accept", "sent_by", "lang"),
    [
        ("zh", "en-US", "发件人：张伟 <zhang.wei@example.cn>", "zh-CN"),
        ("zh", "zh-CN", "发件人：张伟 <zhang.wei@example.cn>", "zh-CN"),
        ("en", "zh-CN", "From: 张伟 <zhang.wei@example.cn>", "en"),
        ("plain", "zh-CN", "From: 张伟 <zhang.wei@example.cn>", "en"),
    ],
)
def test_email_labels_follow_the_form(forms_app, relay, form, accept, sent_by, lang):
    response = forms_app.test_client().post(
        f"/f/{form}?lang={accept}",
        data={"name": "张伟", "email": "zhang.wei@example.cn", "message": "你好"},
        headers={"Origin": SITE, "Accept-Language": accept},
    )
    assert response.status_code == 303
    message = _one_mail(forms_app, relay)
    text = message.get_body(("plain",)).get_content()
    assert text.splitlines()[0] == sent_by
    html = message.get_body(("html",)).get_content()
    assert f'<html lang="{lang}">' in html
    html_by = {"zh-CN": "来自 张伟 &lt;", "en": "From 张伟 &lt;"}[lang]
    assert html_by + "zhang.wei@example.cn&gt;" in html
    assert "'PingFang SC'" in html and "'Noto Sans CJK SC'" in html


def test_an_empty_subject_falls_back_in_the_forms_language(forms_app, relay):
    response = forms_app.test_client().post(
        "/f/zh", data={"message": "你好"}, headers={"Origin": SITE}
    )
    assert response.status_code == 303
    assert _one_mail(forms_app, relay)["Subject"] == "新的表单提交（zh）"


def test_the_hosted_form_mails_in_english_whatever_the_visitor(client, app, relay):
    response = post_form(client, name="张伟", message="你好")
    assert response.status_code == 303
    text = _one_mail(app, relay).get_body(("plain",)).get_content()
    assert text.startswith("From: 张伟 <ada@example.net>\n")


# -- Chinese in every header, end to end through the relay ------------------------

LONG_SUBJECT = "关于贵公司企业版产品的价格、发票开具流程以及售后服务条款的详细咨询" * 2


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("张伟", "咨询"),
        ("欧阳·娜娜", LONG_SUBJECT),
        ("Zhang 伟 (北京)", "Re: 关于 “报价” 的问题"),
        ('李"娜"', "价格？ 100% 满意"),
    ],
    ids=["short", "long", "mixed", "quotes"],
)
def test_cjk_headers_round_trip(make_app, relay, tmp_path, name, subject):
    forms = tmp_path / "forms.toml"
    forms.write_text(
        f'[forms.zh]\nrecipients = ["sales"]\nallowed_origins = ["{SITE}"]\n'
        'language = "zh-CN"\nsubject = "【官网留言】{subject}"\n',
        encoding="utf-8",
    )
    app = make_app(
        relay.env(
            FORMS_FILE=str(forms),
            MAIL_FROM="官网联系表单 <forms@formpost.test>",
        )
    )
    response = app.test_client().post(
        "/f/zh",
        data={
            "name": name,
            "email": "visitor@example.cn",
            "subject": subject,
            "留言": "你好，世界",
        },
        headers={"Origin": SITE},
    )
    assert response.status_code == 303
    message = _one_mail(app, relay)
    assert message["Subject"] == f"【官网留言】{subject}"
    assert message["From"].addresses[0].display_name == "官网联系表单"
    assert message["From"].addresses[0].addr_spec == "forms@formpost.test"
    (reply_to,) = message["Reply-To"].addresses
    assert reply_to.display_name == name
    assert reply_to.addr_spec == "visitor@example.cn"
    assert message["To"].addresses[0].addr_spec == "sales@example.com"
    text = message.get_body(("plain",)).get_content()
    assert "留言: 你好，世界" in text
    html = message.get_body(("html",)).get_content()
    assert "<th" in html and ">留言</th>" in html


# -- the console: the owner's Accept-Language; search finds Chinese ---------------


@pytest.fixture
def console(make_app, relay: Relay, tmp_path):
    forms = tmp_path / "forms.toml"
    forms.write_text(
        f'[forms.zh]\nrecipients = ["sales"]\nallowed_origins = ["{SITE}"]\n'
        'language = "zh-CN"\n',
        encoding="utf-8",
    )
    app = with_owner(make_app(relay.env(FORMS_FILE=str(forms), ADMIN_ENABLED="true")))
    client = app.test_client()
    log_in(client)
    return app, client


def test_console_in_chinese(console):
    app, client = console
    visitor = app.test_client()
    visitor.post(
        "/f/zh",
        data={"name": "张伟", "subject": "关于产品价格的咨询", "message": "你好"},
        headers={"Origin": SITE},
    )
    chinese = {"Accept-Language": "zh-CN,zh;q=0.9"}
    inbox = client.get("/admin/", headers=chinese, follow_redirects=True)
    page = inbox.get_data(as_text=True)
    assert html_lang(page) == "zh-CN"
    assert "收件箱" in page and "待发送" in page
    assert "共 1 条符合条件的提交。" in page
    assert "年" in page and " UTC" in page  # Babel's date, not ISO
    english = client.get("/admin/", follow_redirects=True).get_data(as_text=True)
    assert html_lang(english) == "en"
    assert "Inbox" in english and "收件箱" not in english
    forms = client.get("/admin/forms", headers=chinese).get_data(as_text=True)
    assert "简体中文" in forms


@pytest.mark.parametrize(
    ("query", "hits"),
    [("咨询", 1), ("价格", 1), ("张伟", 1), ("伟", 1), ("报价", 0), ("咨询 张伟", 1)],
)
def test_console_search_finds_chinese(console, query, hits):
    app, client = console
    app.test_client().post(
        "/f/zh",
        data={"name": "张伟", "subject": "关于产品价格的咨询", "message": "你好"},
        headers={"Origin": SITE},
    )
    response = client.get("/admin/", query_string={"q": query}, follow_redirects=True)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    if hits:
        assert "关于产品价格的咨询" in page
        assert "1 matching submission." in page
    else:
        assert "No submissions match." in page


# -- FORM_LANGUAGE: the hosted and default forms, and forms without `language` ---


@pytest.fixture
def zh_default(make_app, relay: Relay, tmp_path) -> Flask:
    forms = tmp_path / "forms.toml"
    forms.write_text(
        f'[forms.inherits]\nrecipients = ["sales"]\nallowed_origins = ["{SITE}"]\n\n'
        f'[forms.english]\nrecipients = ["sales"]\nallowed_origins = ["{SITE}"]\n'
        'language = "en"\n',
        encoding="utf-8",
    )
    return make_app(
        relay.env(FORMS_FILE=str(forms), ALLOWED_ORIGINS=SITE, FORM_LANGUAGE="zh-CN")
    )


@pytest.mark.parametrize(
    ("accept", "expected"),
    [(None, "zh_Hans_CN"), ("fr", "zh_Hans_CN"), ("en-US", "en"), ("zh", "zh_Hans_CN")],
)
def test_form_language_is_the_hosted_forms_default(zh_default, accept, expected):
    headers = {"Accept-Language": accept} if accept else {}
    page = zh_default.test_client().get("/", headers=headers).get_data(as_text=True)
    assert html_lang(page) == html_tag(expected)
    assert HEADING[expected] in page


def test_form_language_sets_the_hosted_forms_emails(zh_default, relay):
    client = zh_default.test_client()
    response = post_form(client, name="张伟", message="你好")
    assert response.status_code == 303
    text = _one_mail(zh_default, relay).get_body(("plain",)).get_content()
    assert text.startswith("发件人：张伟 <ada@example.net>\n")


@pytest.mark.parametrize(
    ("form", "first_line"),
    [
        ("default", "发件人：张伟"),
        ("inherits", "发件人：张伟"),
        ("english", "From: 张伟"),
    ],
)
def test_form_language_is_every_forms_default(zh_default, relay, form, first_line):
    response = zh_default.test_client().post(
        f"/f/{form}",
        data={"name": "张伟", "message": "你好"},
        headers={"Origin": SITE, "Accept-Language": "en"},
    )
    assert response.status_code == 303
    text = _one_mail(zh_default, relay).get_body(("plain",)).get_content()
    assert text.splitlines()[0] == first_line


def test_translated_answers_vary_by_accept_language(client, forms_app):
    assert "Accept-Language" in client.get("/").headers["Vary"]
    answer = forms_app.test_client().post("/f/zh", json={}, headers={"Origin": SITE})
    assert "Accept-Language" in answer.headers["Vary"]
    assert "Origin" in answer.headers["Vary"]
    # Nothing was translated: nothing varies.
    assert "Accept-Language" not in client.get("/healthz").headers.get("Vary", "")


# -- main's newer words: spam views, files, other channels ----------------------

PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256)) * 40
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(200)


@pytest.fixture
def files_app(make_app, relay: Relay, tmp_path) -> Flask:
    """A Chinese and an English form that take files; emails over 4 kB link them."""
    forms = tmp_path / "forms.toml"
    forms.write_text(
        "".join(
            f'[forms.{form}]\nrecipients = ["sales"]\nallowed_origins = ["{SITE}"]\n'
            f'language = "{tag}"\nattachments = {{ max_files = 2 }}\n'
            for form, tag in (("zh", "zh-CN"), ("en", "en"))
        ),
        encoding="utf-8",
    )
    return make_app(
        relay.env(
            FORMS_FILE=str(forms),
            ALLOWED_ORIGINS=SITE,
            ATTACHMENTS_MAX_FILES="2",
            MAIL_MAX_SIZE="4096",
        )
    )


@pytest.mark.parametrize(
    ("accept", "said"),
    [("zh-CN", "不是此表单接受的文件类型"), ("en", "is not a file type this form")],
)
def test_file_refusals_follow_the_visitor(files_app, relay, accept, said):
    answer = files_app.test_client().post(
        "/f/zh",
        data={"message": "你好", "cv": (io.BytesIO(ELF), "简历.exe")},
        headers={
            "Origin": SITE,
            "Accept": "application/json",
            "Accept-Language": accept,
        },
    )
    assert answer.status_code == 415
    (error,) = answer.json["errors"]
    assert error["code"] == "FILE_TYPE"  # codes stay English, for programs
    assert error["file"] == "简历.exe"
    assert said in error["message"] and said in answer.json["message"]
    assert relay.received == []


def test_the_hosted_forms_file_input_in_chinese(files_app):
    page = files_app.test_client().get("/?lang=zh-CN").get_data(as_text=True)
    assert "文件" in page and "最多 2 个文件" in page
    assert 'enctype="multipart/form-data"' in page


@pytest.mark.parametrize(
    ("form", "said", "language"),
    [
        ("zh", "请在控制台中查看提交", "zh-CN"),
        ("en", "Find them in the console under submission", "en"),
    ],
)
def test_the_file_link_notice_follows_the_form(files_app, relay, form, said, language):
    # The visitor's language is the other one: the email follows the form.
    answer = files_app.test_client().post(
        f"/f/{form}",
        data={"message": "你好", "cv": (io.BytesIO(PDF), "cv.pdf")},
        headers={"Origin": SITE, "Accept-Language": "zh-CN" if form == "en" else "en"},
    )
    assert answer.status_code == 303
    message = _one_mail(files_app, relay)
    assert message["Content-Language"] == language
    assert list(message.iter_attachments()) == []
    (row,) = files_app.extensions["formpost"].ledger.rows()
    texts = [
        part.get_content()
        for part in message.walk()
        if part.get_content_type() == "text/plain"
    ]
    assert any(f"{said} {row.receipt}" in text for text in texts)


def test_a_chat_notification_in_the_forms_language():
    from types import SimpleNamespace

    from app.notifier import chat_text

    source = SimpleNamespace(
        form_id="zh",
        subject="",
        name="张伟",
        email="zhang.wei@example.cn",
        receipt="AB12-CD34",
        fields=(),
        message="你好",
    )
    title, body = chat_text(source, None, False, "zh_Hans_CN")
    assert title == "新的表单提交"
    assert body.splitlines() == [
        "表单 zh 有新提交：",
        "发件人：张伟 <zhang.wei@example.cn>",
        "回执编号 AB12-CD34（/admin/s/AB12-CD34）",
    ]
    title, body = chat_text(source, None, False)
    assert title == "New submission"
    assert body.splitlines()[0] == "New submission on zh: "


def test_the_spam_views_in_chinese(console):
    from .helpers import ledger_of, store_verdict

    app, client = console
    answer = app.test_client().post(
        "/f/zh", data={"message": "SEO 优化"}, headers={"Origin": SITE}
    )
    assert answer.status_code == 303
    (row,) = ledger_of(app).rows()
    store_verdict(ledger_of(app), row.receipt, state="spam")
    chinese = {"Accept-Language": "zh-CN"}
    view = client.get("/admin/?state=spam", headers=chinese).get_data(as_text=True)
    assert "已隔离" in view and "放行全部 1 条符合条件的提交" in view
    assert "原因" in view and "分数 7.5" in view
    page = client.get(f"/admin/s/{row.receipt}", headers=chinese)
    page = page.get_data(as_text=True)
    assert "垃圾信息判定：已隔离" in page and "放行并投递" in page
    assert "分数 7.5。" in page
