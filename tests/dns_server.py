"""A DNS server on loopback for tests (dnslib), and DKIM key pairs to publish."""

from __future__ import annotations

import base64
import socket
from dataclasses import dataclass

import dns.resolver
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer


def key_pair() -> tuple[bytes, str]:
    """A 2048-bit RSA key: (private PEM, the base64 DER a DNS record's p= holds)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public).decode("ascii")


class Zone(BaseResolver):
    """Answer from {(name, type): [rdata]}: NXDOMAIN for unknown names,
    an empty NOERROR answer for a known name without that type, SERVFAIL
    for the names in `servfail`."""

    def __init__(self, records: dict[tuple[str, str], list], servfail: set[str]):
        self.records = records
        self.servfail = servfail

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()  # the root is ""
        qtype = QTYPE[request.q.qtype]
        if name in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        for rdata in self.records.get((name, qtype), []):
            reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=rdata, ttl=60))
        if not reply.rr and all(known != name for known, _ in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


def txt_record(text: str) -> TXT:
    """A TXT record, split into character-strings of at most 255 bytes."""
    return TXT([text[i : i + 255] for i in range(0, len(text), 255)])


@dataclass
class LocalDNS:
    """A dnslib server on 127.0.0.1 (UDP, a free port) and a resolver for it."""

    server: DNSServer
    zone: Zone

    @property
    def port(self) -> int:
        return self.server.server.server_address[1]

    def resolver(self) -> dns.resolver.Resolver:
        return loopback_resolver(self.port)

    def stop(self) -> None:
        self.server.stop()
        self.server.server.server_close()
        self.server.thread.join(timeout=5)

    def dkim_dnsfunc(self):
        """A `dnsfunc` for dkim.verify that asks this server for TXT records."""
        resolver = self.resolver()

        def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
            try:
                answer = resolver.resolve(name.decode().rstrip("."), "TXT")
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                return None
            return b"".join(b"".join(r.strings) for r in answer)

        return dnsfunc


def loopback_resolver(port: int) -> dns.resolver.Resolver:
    """A dnspython resolver that asks 127.0.0.1:port and nothing else."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    return resolver


def free_udp_port() -> int:
    """A loopback UDP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dns(
    records: dict[tuple[str, str], list], servfail: tuple[str, ...] = ()
) -> LocalDNS:
    """Serve `records` {(name, type): [rdata]} on a free loopback UDP port."""
    server = DNSServer(
        Zone(records, set(servfail)),
        address="127.0.0.1",
        port=0,
        logger=DNSLogger("-request,-reply,-truncated,-error", prefix=False),
    )
    server.start_thread()
    return LocalDNS(server, server.server.resolver)
