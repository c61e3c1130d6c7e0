"""The delivery error hierarchy and its one mapping to HTTP responses.

Every transport raises only these. Callers decide what an outcome means
(retry, dead-letter, alert) by class, never by parsing library exceptions.
"""

from __future__ import annotations


class DeliveryError(Exception):
    """A message could not be handed to the relay.

    `reply` is safe to log and store: an SMTP reply or a short description,
    never credentials. `code` is the SMTP reply code when the relay sent one.
    """

    kind = "delivery"

    def __init__(self, reply: str, code: int | None = None) -> None:
        super().__init__(reply)
        self.reply = reply
        self.code = code

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
