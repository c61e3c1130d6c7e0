"""The languages Formpost ships, and how a language tag names one. Pure: no Flask.

Adding a language is one line here plus its catalogue,
app/translations/<locale>/LC_MESSAGES/messages.po (README: "Translations").
"""

from __future__ import annotations

# Babel locale id (the catalogue's folder; Babel spells Simplified Chinese
# zh_Hans_CN) -> the tag a form's `language`, `?lang=` and `<html lang>` use.
# English, the source language, first; it needs no catalogue.
LANGUAGES = {
    "en": "en",
    "zh_Hans_CN": "zh-CN",
}
DEFAULT_LOCALE = "en"
TAGS = tuple(LANGUAGES.values())


def html_tag(locale: str) -> str:
    """Return the tag for `lang="..."` attributes: zh_Hans_CN -> zh-CN."""
    return LANGUAGES.get(locale) or locale.replace("_", "-")


def _norm(tag: str) -> str:
    return tag.strip().replace("_", "-").lower()


def exact_locale(tag: str) -> str | None:
    """Return the shipped locale a tag names exactly (any case, - or _), or None.

    Both spellings count: zh-CN and zh-Hans-CN are Simplified Chinese.
    """
    wanted = _norm(tag)
    for locale, short in LANGUAGES.items():
        if wanted in (_norm(short), _norm(locale)):
            return locale
    return None


def match_locale(tag: str) -> str | None:
    """Return the shipped locale nearest a visitor's tag, or None.

    An exact tag wins; otherwise the primary language decides, so en-GB gets
    English and zh, zh-Hans and zh-TW get Simplified Chinese (more readable
    to a Traditional Chinese reader than English; no Traditional catalogue
    is shipped yet).
    """
    exact = exact_locale(tag)
    if exact is not None:
        return exact
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    if not primary or primary == "*":
        return None
    for locale in LANGUAGES:
        if locale.split("_", 1)[0].lower() == primary:
            return locale
    return None
