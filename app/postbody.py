"""Read a cross-site post's body into (name, value) pairs, strictly.

Parsed here rather than through Flask's `request.form` and `get_json`, so that
every body we cannot use is refused with a status and a sentence a person
understands, and never becomes a 500 or silently altered text:

- invalid UTF-8, a lone UTF-16 surrogate, JSON nested too deep: 400;
- a file in a multipart body: 415 naming the field, found while the body
  streams in, so a file larger than MAX_CONTENT_LENGTH is still named as a
  file rather than reported as "too large";
- a body over MAX_CONTENT_LENGTH: 413 saying the limit.
"""

from __future__ import annotations

import json
from typing import IO, Any
from urllib.parse import parse_qsl

from flask_babel import gettext
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import (
    Data,
    Epilogue,
    Field,
    File,
    MultipartDecoder,
    NeedData,
)
from werkzeug.wrappers import Request
from werkzeug.wsgi import get_input_stream

from .errors import Rejected
from .i18n import number
from .uploads import AttachmentSettings, Receiver, Uploads

# Parsing stops here; interpret() then refuses anything over its own limit
# (50 fields) with a clearer message.
MAX_PARTS = 1000
CHUNK = 16 * 1024
# A form's JSON is one object of text or lists of text: depth 2. Deeper is
# refused as malformed, whether the parser's own recursion limit stops it
# (RecursionError, near 1,000) or the parsed value is checked (below that).
MAX_DEPTH = 32
# After a refused file or an oversized body, read on at most this much so
# that the client, still sending, reads our answer, not a reset connection.
DRAIN_LIMIT = 4 * 1024 * 1024


def parse_body(body: bytes, kind: str) -> list[tuple[str, str]]:
    """Parse a body kept in a file (`urlencoded` or `json`), as posts are.

    For `explain`: the same strict rules as a live post; Rejected says why.
    """
    if kind == "json":
        return _json_pairs(body)
    return _urlencoded_pairs(body)


def too_large_message(limit: int) -> str:
    """Say what was too large: the whole post, and the limit in kB."""
    return gettext(
        "The whole post is larger than %(kb)s kB, the most this form accepts. "
        "Please shorten your message and send it again.",
        kb=number(limit // 1024),
    )


def read_pairs(request: Request, limit: int) -> list[tuple[str, str]]:
    """Return the posted fields in order; raise Rejected for an unusable body."""
    if request.is_json:
        return _json_pairs(_read_all(request, limit))
    if request.mimetype == "application/x-www-form-urlencoded":
        return _urlencoded_pairs(_read_all(request, limit))
    if request.mimetype == "multipart/form-data":
        return _multipart_pairs(request, limit)
    raise Rejected(
        415,
        {
            "_form": gettext(
                "Send the form as application/x-www-form-urlencoded, "
                "multipart/form-data or application/json."
            )
        },
        codes={"_form": "UNSUPPORTED_CONTENT_TYPE"},
    )


def read_post(
    request: Request,
    limit: int,
    attachments: AttachmentSettings | None,
    spool_dir: str | None = None,
) -> tuple[list[tuple[str, str]], Uploads]:
    """Return the posted fields and, for a form that takes them, its files.

    The files are in temporary files the caller must close (Uploads.close)
    on every path; on a refusal here they are closed already. `limit` is
    the text's limit; a form with attachments allows its files on top.
    """
    if attachments is None or request.mimetype != "multipart/form-data":
        return read_pairs(request, limit), Uploads()
    uploads = Uploads()
    try:
        pairs = _multipart_pairs(
            request,
            attachments.body_limit(limit),
            attachments,
            uploads,
            spool_dir,
            text_limit=limit,
        )
    except BaseException:
        uploads.close()
        raise
    return pairs, uploads


def _too_large(limit: int) -> Rejected:
    return Rejected(
        413, {"_form": too_large_message(limit)}, codes={"_form": "TOO_LARGE"}
    )


def _malformed(message: str, code: str) -> Rejected:
    return Rejected(400, {"_form": message}, codes={"_form": code})


def _stream(request: Request) -> IO[bytes]:
    # The raw input, bounded by Content-Length (or the server's end of a
    # chunked body) but not yet by MAX_CONTENT_LENGTH: that is counted here.
    return get_input_stream(request.environ, safe_fallback=True)


def _read_all(request: Request, limit: int) -> bytes:
    stream = _stream(request)
    length = request.content_length
    if length is not None and length > limit:
        _drain(stream)
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while chunk := stream.read(min(CHUNK, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            _drain(stream)
            raise _too_large(limit)
    return b"".join(chunks)


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _not_utf8() from None


def _not_utf8() -> Rejected:
    return _malformed(
        gettext(
            "The form was not sent as UTF-8 text. Please send it again from a "
            "current browser, or encode it as UTF-8."
        ),
        "INVALID_UTF8",
    )


def _no_surrogates(text: str) -> str:
    # A lone surrogate (JSON "\ud800") is not a character: it cannot be
    # encoded, stored or mailed.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _malformed(
            gettext(
                "The JSON contains an invalid character escape (a lone UTF-16 "
                "surrogate such as \\ud800). Send text as UTF-8."
            ),
            "INVALID_CHARACTER",
        ) from None
    return text


def _too_deep() -> Rejected:
    return _malformed(
        gettext(
            "The JSON is nested too deeply. Send one object of field names and "
            "text values."
        ),
        "TOO_DEEP",
    )


def _deeper_than(value: Any, limit: int) -> bool:
    """Tell whether arrays and objects in a parsed value nest past `limit`."""
    level = [value]
    for _ in range(limit):
        level = [
            child
            for item in level
            if isinstance(item, list | dict)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return False
    return any(isinstance(item, list | dict) for item in level)


def _json_pairs(body: bytes) -> list[tuple[str, str]]:
    text = _text(body)
    try:
        data = json.loads(text)
    except RecursionError:
        raise _too_deep() from None
    except ValueError:
        raise _malformed(
            gettext(
                "The body is not valid JSON. Send one object of field names and "
                "text values."
            ),
            "INVALID_JSON",
        ) from None
    if _deeper_than(data, MAX_DEPTH):
        raise _too_deep()
    if not isinstance(data, dict):
        raise _malformed(gettext("Send a JSON object of field names."), "NOT_AN_OBJECT")
    return [(_no_surrogates(k), _json_value(k, v)) for k, v in data.items()]


def _json_value(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return _no_surrogates(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return _no_surrogates(", ".join(str(v) for v in value))
    raise Rejected(
        422,
        {
            name: gettext(
                "Send %(field)s as text, a number, true/false or a list of text.",
                field=name,
            )
        },
        codes={name: "TYPE_TEXT"},
    )


def _urlencoded_pairs(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(
            _text(body),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_PARTS,
        )
    except UnicodeDecodeError:
        # A percent-escape that is not UTF-8 (%FF, or an encoded surrogate).
        raise _not_utf8() from None
    except ValueError:
        raise _too_many() from None


def _too_many() -> Rejected:
    return _malformed(
        gettext("Too many fields (more than %(most)s).", most=number(MAX_PARTS)),
        "TOO_MANY_FIELDS",
    )


def _files_refused(name: str) -> Rejected:
    return Rejected(
        415,
        {
            name or "_form": gettext(
                "Files are not accepted by this form. Remove the "
                "file and send the form again."
            )
        },
        codes={name or "_form": "FILES_NOT_ACCEPTED"},
    )


def _multipart_pairs(
    request: Request,
    limit: int,
    attachments: AttachmentSettings | None = None,
    uploads: Uploads | None = None,
    spool_dir: str | None = None,
    text_limit: int | None = None,
) -> list[tuple[str, str]]:
    boundary = request.mimetype_params.get("boundary", "").encode("latin-1")
    if not boundary:
        raise _malformed(
            gettext(
                "The multipart body has no boundary; let the browser set the "
                "Content-Type of a FormData post."
            ),
            "MALFORMED_MULTIPART",
        )
    stream = _stream(request)
    decoder = MultipartDecoder(boundary, max_parts=MAX_PARTS)
    pairs: list[tuple[str, str]] = []
    name, value, is_file = "", bytearray(), False
    receiver: Receiver | None = None
    size = text = 0
    try:
        while True:
            event = decoder.next_event()
            if isinstance(event, NeedData):
                chunk = stream.read(CHUNK)
                size += len(chunk)
                if size > limit:
                    _drain(stream)
                    raise _too_large(limit)
                decoder.receive_data(chunk or None)
            elif isinstance(event, File):
                if event.filename and attachments is not None and uploads is not None:
                    # Streamed to a temporary file, limits counted as it comes.
                    try:
                        receiver = Receiver(
                            attachments, event.name, event.filename, uploads, spool_dir
                        )
                    except Rejected:
                        _drain(stream)
                        raise
                    continue
                if event.filename:
                    # Named as soon as its headers arrive, before its data.
                    _drain(stream)
                    raise _files_refused(event.name)
                # An empty file input (no file chosen): browsers still send it.
                name, value, is_file = event.name or "", bytearray(), True
            elif isinstance(event, Field):
                name, value, is_file = event.name or "", bytearray(), False
            elif isinstance(event, Data) and receiver is not None:
                try:
                    receiver.write(event.data)
                    if not event.more_data:
                        done, receiver = receiver, None
                        done.finish()
                except Rejected:
                    _drain(stream)
                    raise
            elif isinstance(event, Data):
                # The text alone stays within MAX_CONTENT_LENGTH even where
                # files allow a larger body: text is held in memory.
                text += len(event.data)
                if text_limit is not None and text > text_limit:
                    _drain(stream)
                    raise _too_large(text_limit)
                value += event.data
                if not event.more_data:
                    if not is_file:
                        pairs.append((name, _text(bytes(value))))
                    elif value:
                        _drain(stream)
                        raise _files_refused(name)
            elif isinstance(event, Epilogue):
                return pairs
    except RequestEntityTooLarge:
        # werkzeug's decoder says this for more than MAX_PARTS parts.
        raise _too_many() from None
    except ValueError:
        # werkzeug's decoder: a truncated or malformed body.
        raise _malformed(
            gettext("The multipart body is malformed or cut short."),
            "MALFORMED_MULTIPART",
        ) from None
    finally:
        # A file cut short by a refusal or a broken body.
        if receiver is not None:
            receiver.discard()


def _drain(stream: IO[bytes]) -> None:
    read = 0
    while read < DRAIN_LIMIT and (chunk := stream.read(CHUNK)):
        read += len(chunk)
