"""Copy-paste code for a form on the owner's site: plain HTML and fetch().

Pure functions from a FormDef and the endpoint's URL to text. Every value
from configuration is HTML-escaped into the snippet (the snippet is code for
another page); the console escapes the whole snippet again to show it.
"""

from __future__ import annotations

import json
from html import escape

from .formdefs import FormDef

# The drop-in names every snippet uses (README "Drop-in field names").
STANDARD = ("name", "email", "message")
# Hides the honeypot from people on the owner's page; a bot still fills it.
HIDDEN = "position:absolute;left:-10000px"


def rate_text(rate: tuple[tuple[int, int], ...]) -> str:
    """Write a rate limit back as RATE_LIMIT spells it: `5/minute;50/day`."""
    if not rate:
        return "off"
    units = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
    parts = []
    for count, seconds in rate:
        unit = units.get(seconds)
        parts.append(f"{count}/{unit}" if unit else f"{count}/{seconds}second")
    return ";".join(parts)


def _fields(form: FormDef, indent: str) -> list[str]:
    """The form's inputs: name, email, message, other required fields, honeypot."""
    required = {name.lower() for name in form.required}
    req = {name: " required" if name in required else "" for name in STANDARD}
    lines = [
        f'<label>Your name <input name="name" autocomplete="name"{req["name"]}>'
        "</label>",
        '<label>Your email <input name="email" type="email" autocomplete="email"'
        " required></label>",
        f'<label>Message <textarea name="message"{req["message"]}></textarea></label>',
    ]
    for name in form.required:
        if name.lower() not in STANDARD:
            field = escape(name)
            lines.append(f'<label>{field} <input name="{field}" required></label>')
    lines += [
        "<!-- a honeypot: people never see it, bots fill it -->",
        f'<input type="text" name="{escape(form.honeypot)}" tabindex="-1"'
        ' autocomplete="off"',
        f'       style="{HIDDEN}" aria-hidden="true">',
    ]
    return [indent + line for line in lines]


def plain_html(form: FormDef, action: str) -> str:
    """A plain HTML form posting to `action`; the browser follows the answer."""
    lines = [f'<form action="{escape(action)}" method="POST">']
    lines += _fields(form, "  ")
    lines += [
        "  <!-- optional: where to go afterwards, a path on your site"
        + (" or a URL on a redirect host" if form.redirect_hosts else "")
        + " -->",
        '  <!-- <input type="hidden" name="_next" value="/thanks.html"> -->',
        "  <button>Send</button>",
        "</form>",
    ]
    return "\n".join(lines) + "\n"


def fetch_html(form: FormDef, action: str) -> str:
    """The same form sent with fetch(): the answer's message shown in the page."""
    origins = sorted(form.allowed_origins)
    if origins:
        where = (
            f"// Serve this page from {origins[0]} (an allowed origin of this form):"
            "\n  // from any other origin the post is refused with 403."
        )
    else:
        where = (
            "// Add your site's origin (such as https://www.example.com) to this"
            "\n  // form's allowed origins first: from any other origin, 403."
        )
    lines = [f'<form id="contact-form" action="{escape(action)}" method="POST">']
    lines += _fields(form, "  ")
    lines += [
        "  <button>Send</button>",
        '  <p id="contact-status" role="status"></p>',
        "</form>",
        "<script>",
        f"  {where}",
        '  const form = document.getElementById("contact-form");',
        '  const result = document.getElementById("contact-status");',
        '  form.addEventListener("submit", async (event) => {',
        "    event.preventDefault();",
        "    try {",
        "      const response = await fetch(form.action, {",
        '        method: "POST",',
        "        body: new FormData(form),",
        '        headers: { "Accept": "application/json" },',
        "      });",
        "      const json = await response.json();",
        "      if (response.ok) {",
        "        result.textContent = json.message;",
        "        form.reset();",
        "      } else {",
        "        // json.errors: one {field, code, message} per problem",
        "        result.textContent = json.errors",
        '          ? json.errors.map((e) => e.message).join(" ")',
        "          : json.message;",
        "      }",
        "    } catch (error) {",
        f"      result.textContent = {json.dumps(NETWORK_ERROR)};",
        "    }",
        "  });",
        "</script>",
    ]
    return "\n".join(lines) + "\n"


NETWORK_ERROR = "Sorry, the form could not be sent. Please try again."
