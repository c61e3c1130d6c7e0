"""Files posted with a form: the form's rules, clean names, type by content.

A file arrives in parts while the body streams in (postbody.py); `Receiver`
writes each part to an anonymous temporary file (unlinked from the start,
so a crash leaves nothing on disk), counts it against the form's limits as
it goes and, at the file's end, finds its type from its bytes: never from
the client's Content-Type or the name's extension.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from flask_babel import gettext, ngettext

from .errors import Rejected, StorageError
from .i18n import number

MB = 1024 * 1024
DEFAULT_TYPES = ("application/pdf", "image/png", "image/jpeg", "text/plain")
# What the headers of one multipart part may add to the body, per file.
PART_OVERHEAD = 4096
# The bytes kept in memory to find a file's type from (puremagic's magic
# numbers are all within its first few kB).
HEAD = 64 * 1024
# Spooled files stay in memory up to this size, then go to disk.
SPOOL_MEMORY = 256 * 1024
NAME_BYTES = 200
EXTENSION_BYTES = 20
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
_BIDI |= {"\u200e", "\u200f", "\u061c"}
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*]')
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])$", re.IGNORECASE)
# How puremagic names a few types, and the name an owner's rules use.
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}


@dataclass(frozen=True)
class AttachmentSettings:
    """What one form takes: how many files, how large, which types."""

    max_files: int = 3
    max_file_size: int = 10 * MB
    max_total_size: int = 20 * MB
    types: tuple[str, ...] = DEFAULT_TYPES

    def allows(self, media_type: str) -> bool:
        """Tell whether a detected type is one of the form's types or families."""
        family = media_type.split("/", 1)[0] + "/*"
        return media_type in self.types or family in self.types

    def body_limit(self, text_limit: int) -> int:
        """The largest body such a post may have: its text, files and part headers."""
        return text_limit + self.max_total_size + self.max_files * PART_OVERHEAD


def size_text(size: int) -> str:
    """Say a size as people read it: '10 MB', '512 kB'."""
    if size >= MB and size % MB == 0:
        return f"{size // MB} MB"
    if size >= MB:
        return f"{size / MB:.1f} MB"
    return f"{max(1, size // 1024)} kB"


def clean_filename(raw: str) -> str:
    """Return a name safe on every system and in every mail client, still readable.

    The last path component only; control characters and bidirectional
    overrides out (they make "invoice‮fdp.exe" read as "invoiceexe.pdf");
    characters Windows refuses replaced; reserved device names prefixed; at
    most 200 bytes of UTF-8, keeping the extension. Letters of any script stay.
    """
    name = unicodedata.normalize("NFC", raw)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(
        c
        for c in name
        if c not in _BIDI and unicodedata.category(c) not in ("Cc", "Cs", "Co")
    )
    name = _WINDOWS_FORBIDDEN.sub("_", name)
    name = name.strip(" .")
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    if _RESERVED.match(stem.split(".")[0].strip()):
        name, stem = f"_{name}", f"_{stem}"
    if len(name.encode("utf-8")) > NAME_BYTES:
        if len(extension.encode("utf-8")) > EXTENSION_BYTES:
            stem, extension = name, ""
        room = NAME_BYTES - (len(extension.encode("utf-8")) + 1 if extension else 0)
        stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(" .")
        name = f"{stem}.{extension}" if extension else stem
    return name or "attachment"


def detect_type(head: bytes, is_text: bool) -> str:
    """Return the media type found from a file's first bytes.

    puremagic knows binary formats by their magic numbers; plain text has
    none, so a file that is valid UTF-8 without NUL bytes is text/plain.
    Anything else is application/octet-stream.
    """
    # Imported here: only forms that take files pay for its tables.
    import puremagic

    try:
        found = puremagic.from_string(head, mime=True) if head else ""
    except (puremagic.PureError, ValueError):
        found = ""
    if found:
        return _ALIASES.get(found, found)
    return "text/plain" if is_text and head else "application/octet-stream"


@dataclass
class Upload:
    """One received file: its temporary file and what was found out about it."""

    field: str
    filename: str
    file: IO[bytes]
    size: int
    sha256: str
    content_type: str

    def chunks(self, size: int) -> Iterator[bytes]:
        """Yield the file's bytes from the start, `size` at a time."""
        self.file.seek(0)
        while chunk := self.file.read(size):
            yield chunk


@dataclass
class Uploads:
    """The files of one post; close() discards every temporary file."""

    files: list[Upload] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(upload.size for upload in self.files)

    def close(self) -> None:
        for upload in self.files:
            upload.file.close()
        self.files.clear()

    def __bool__(self) -> bool:
        return bool(self.files)


def _refused(
    status: int, field: str, filename: str, message: str, code: str
) -> Rejected:
    return Rejected(
        status, {field: message}, codes={field: code}, files={field: filename}
    )


class Receiver:
    """Take one file's parts as they arrive, enforcing the form's limits."""

    def __init__(
        self,
        settings: AttachmentSettings,
        field: str,
        raw_name: str,
        received: Uploads,
        spool_dir: str | None = None,
    ) -> None:
        self.settings = settings
        self.field = field or "_form"
        self.filename = clean_filename(raw_name)
        self.received = received
        if len(received.files) >= settings.max_files:
            raise _refused(
                413,
                self.field,
                self.filename,
                ngettext(
                    "“%(name)s” is one file too many: this form takes at most "
                    "%(count)s file. Please choose your files again.",
                    "“%(name)s” is one file too many: this form takes at most "
                    "%(count)s files. Please choose your files again.",
                    settings.max_files,
                    name=self.filename,
                    count=number(settings.max_files),
                ),
                "TOO_MANY_FILES",
            )
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(
            max_size=SPOOL_MEMORY, dir=spool_dir
        )
        self.spool_dir = spool_dir
        self.size = 0
        self.head = bytearray()
        self.digest = hashlib.sha256()
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._text = True

    def write(self, data: bytes) -> None:
        """Add a part of the file; refuse the post the moment a limit is crossed."""
        settings = self.settings
        self.size += len(data)
        if self.size > settings.max_file_size:
            self.discard()
            raise _refused(
                413,
                self.field,
                self.filename,
                gettext(
                    "“%(name)s” is larger than %(size)s, the most this form "
                    "takes per file. Please choose your files again.",
                    name=self.filename,
                    size=size_text(settings.max_file_size),
                ),
                "FILE_TOO_LARGE",
            )
        if self.received.total + self.size > settings.max_total_size:
            self.discard()
            raise _refused(
                413,
                self.field,
                self.filename,
                gettext(
                    "With “%(name)s” the files are larger than %(size)s "
                    "together, the most this form takes. Please choose your "
                    "files again.",
                    name=self.filename,
                    size=size_text(settings.max_total_size),
                ),
                "FILES_TOO_LARGE",
            )
        if len(self.head) < HEAD:
            self.head += data[: HEAD - len(self.head)]
        if self._text:
            try:
                self._utf8.decode(data)
            except UnicodeDecodeError:
                self._text = False
            else:
                self._text = b"\x00" not in data
        self.digest.update(data)
        try:
            self._write(data)
        except OSError as exc:
            # A full or missing temporary directory: the post is not lost
            # to a 500, the visitor is told to try again (503).
            self.discard()
            raise StorageError(f"could not keep an uploaded file: {exc}") from exc

    def _write(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except FileNotFoundError:
            # The spool directory (in the instance folder) is made when first
            # needed; the file rolls over to disk only past SPOOL_MEMORY.
            # The bytes are in the in-memory buffer already: only the move
            # to disk failed, so it is what is tried again.
            if self.spool_dir is None:
                raise
            os.makedirs(self.spool_dir, exist_ok=True)
            self.file.rollover()  # type: ignore[attr-defined]

    def finish(self) -> Upload:
        """Check the type found from the bytes; add the file to the post's files."""
        if self._text:
            try:
                self._utf8.decode(b"", final=True)
            except UnicodeDecodeError:
                self._text = False
        found = detect_type(bytes(self.head), self._text)
        if not self.settings.allows(found):
            self.discard()
            allowed = ", ".join(self.settings.types)
            raise _refused(
                415,
                self.field,
                self.filename,
                gettext(
                    "“%(name)s” is not a file type this form takes (its "
                    "content is %(found)s; allowed: %(allowed)s). Please "
                    "choose your files again.",
                    name=self.filename,
                    found=found,
                    allowed=allowed,
                ),
                "FILE_TYPE",
            )
        upload = Upload(
            field=self.field,
            filename=self.filename,
            file=self.file,
            size=self.size,
            sha256=self.digest.hexdigest(),
            content_type=found,
        )
        self.received.files.append(upload)
        return upload

    def discard(self) -> None:
        self.file.close()


def receive_parsed(
    parts: Iterable[tuple[str, str, IO[bytes]]],
    settings: AttachmentSettings,
    spool_dir: str | None = None,
) -> Uploads:
    """Check files a form parser already spooled ((field, name, stream)).

    For the hosted form, whose body Flask parses (its CSRF check reads the
    form first): each file goes through a Receiver as if it were arriving,
    so the same limits, types and names apply. Close the result.
    """
    uploads = Uploads()
    receiver: Receiver | None = None
    try:
        for field_name, filename, stream in parts:
            receiver = Receiver(settings, field_name, filename, uploads, spool_dir)
            while chunk := stream.read(64 * 1024):
                receiver.write(chunk)
            receiver.finish()
            receiver = None
    except BaseException:
        # The file being read when it failed is not among the uploads yet.
        if receiver is not None:
            receiver.discard()
        uploads.close()
        raise
    return uploads
