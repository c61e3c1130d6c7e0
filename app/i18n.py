"""Which language a page, a JSON answer or an email is written in (Flask-Babel).

The locale is chosen per request, first match wins:

1. `?lang=` on the visitor's pages (the hosted form and /f/<form>); the
   hosted form keeps it across the post in its action URL;
2. Accept-Language, among the shipped languages (app/languages.py);
3. the form's `language` from FORMS_FILE (for /f/<form>), or FORM_LANGUAGE
   (for the hosted form and the `default` form);
4. English.

The console follows the owner's Accept-Language only. An email's labels
follow the form (`mail_locale`), never the visitor. Log lines and CLI
output stay English: they are read by the operator and by tools.
"""

from __future__ import annotations

import functools
import os

from babel import support
from babel.numbers import format_decimal
from flask import Flask, Response, current_app, g, has_request_context, request
from flask_babel import Babel, get_locale

from .languages import DEFAULT_LOCALE, LANGUAGES, html_tag, match_locale

VISITOR_BLUEPRINTS = ("hosted", "endpoint")
TRANSLATIONS = os.path.join(os.path.dirname(__file__), "translations")


def init_app(app: Flask) -> None:
    """Set up Flask-Babel (app.extensions["babel"]) and the template helpers."""
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LOCALE)
    # Relative to the app package: app/translations/<locale>/LC_MESSAGES/.
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    Babel(app, locale_selector=select_locale)

    @app.context_processor
    def _language() -> dict[str, object]:
        return {"html_lang": page_lang, "lang_arg": lang_arg}

    @app.after_request
    def _vary(response: Response) -> Response:
        # A cache must not hand one visitor's Chinese page to another's
        # English browser.
        if g.get("locale_chosen"):
            response.vary.add("Accept-Language")
        return response


def select_locale() -> str:
    """Choose the locale for this request (the order is in the module docstring)."""
    if not has_request_context():
        return DEFAULT_LOCALE
    g.locale_chosen = True  # the answer depends on the request: _vary
    if request.blueprint in VISITOR_BLUEPRINTS:
        chosen = _lang_locale()
        if chosen:
            return chosen
    for tag, quality in request.accept_languages:
        found = match_locale(tag) if quality > 0 else None  # q=0: "not this one"
        if found is not None:
            return found
    if request.blueprint == "endpoint":
        # Imported here: fieldmap, pure but for its messages, imports this
        # module and should not pull the services in with it.
        from .services import services

        form = services().forms.get((request.view_args or {}).get("form_id", ""))
        if form is not None and form.language:
            return form.language
    elif request.blueprint == "hosted":
        return current_app.config.get("FORM_LANGUAGE") or DEFAULT_LOCALE
    return DEFAULT_LOCALE


def _lang_locale() -> str | None:
    """The shipped locale `?lang=` names on this request, or None (ignored if bad)."""
    value = request.args.get("lang", "")
    if not value or len(value) > 35:
        return None
    return match_locale(value)


def lang_arg() -> str | None:
    """`?lang=` to carry on to the next page (zh-CN), or None when not chosen."""
    locale = _lang_locale()
    return None if locale is None else html_tag(locale)


def page_lang() -> str:
    """The `<html lang>` value for this page: en, zh-CN."""
    return html_tag(str(get_locale() or DEFAULT_LOCALE))


def mail_locale(language: str | None) -> str:
    """The locale an email's labels are written in: the form's, else English."""
    return language if language in LANGUAGES else DEFAULT_LOCALE


def number(value: float) -> str:
    """Write a number as this request's locale does (English outside one)."""
    return format_decimal(value, locale=get_locale() or DEFAULT_LOCALE)


@functools.cache
def catalogue(locale: str) -> support.NullTranslations:
    """The shipped catalogue of `locale`, for words made outside a request.

    The workers (a chat notification, an email's file-link notice) have no
    request and no Flask-Babel locale: they write in the form's language
    through this. English, or a locale without a catalogue: the source text.
    """
    if locale not in LANGUAGES or locale == DEFAULT_LOCALE:
        return support.NullTranslations()
    return support.Translations.load(TRANSLATIONS, [locale])


def locale_number(value: float, locale: str) -> str:
    """Write a number as `locale` does, outside a request (the workers)."""
    return format_decimal(value, locale=locale)
