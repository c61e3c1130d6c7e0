"""Typed errors: the delivery hierarchy, and requests we refuse.

Every transport raises only DeliveryError subclasses; the worker decides what
an outcome means (retry, dead-letter, alert) by class, never by parsing
library exceptions. The ledger raises only StorageError. Rejected carries a
refused request to handlers.py, the one place that turns errors into
responses.
"""

from __future__ import annotations


class DeliveryError(Exception):
    """A message could not be handed to the relay.

    `reply` is safe to log and store: an SMTP reply or a short description,
    never credentials. `code` is the SMTP reply code when the relay sent one.
    """

    kind = "delivery"

    def __init__(
        self, reply: str, code: int | None = None, connection_lost: bool = False
    ) -> None:
        super().__init__(reply)
        self.reply = reply
        self.code = code
        # The relay hung up: the session is gone, a new one may succeed.
        self.connection_lost = connection_lost

    def __str__(self) -> str:
        return f"{self.kind}: {self.reply}"


class TransientError(DeliveryError):
    """Try again later: 4xx replies, refused or dropped connections, timeouts."""

    kind = "transient"


class PermanentError(DeliveryError):
    """The relay refused this message for good (5xx on RCPT or DATA)."""

    kind = "permanent"


class ConfigurationError(DeliveryError):
    """Our side is misconfigured: bad certificate, AUTH refused, no STARTTLS.

    Retrying will not help until an operator acts, but the message is not at
    fault either, so it must not be dead-lettered.
    """

    kind = "configuration"


class StorageError(Exception):
    """The ledger could not store or read; the visitor must not be told "sent".

    Every database failure that leaves app/ledger/ is one of these.
    """


class Rejected(Exception):
    """A request we refuse, with a status, per-field messages and maybe a wait.

    `errors` maps field names (or "_form" for the whole post) to messages a
    person understands; `codes` gives some of them a machine-readable code
    (e.g. "TYPE_EMAIL") for JSON clients. handlers.py turns it into JSON or
    a page.
    """

    def __init__(
        self,
        status: int,
        errors: dict[str, str],
        retry_after: int | None = None,
        codes: dict[str, str] | None = None,
        files: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status}: {errors}")
        self.status = status
        self.errors = errors
        self.retry_after = retry_after
        self.codes = codes or {}
        # The (cleaned) name of the file an error is about, by error key.
        self.files = files or {}
