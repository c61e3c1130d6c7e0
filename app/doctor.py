"""`flask --app wsgi doctor`: find why mail would not arrive, before a visitor does.

Each check prints PASS, WARN, FAIL or SKIP with a concrete fix; any FAIL makes
the command exit non-zero. Nothing is sent unless --send-test is given: the
relay sees MAIL FROM and RCPT TO, then RSET and QUIT.
"""

from __future__ import annotations

import base64
import datetime as dt
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import click
from flask import Flask, current_app

from .accept import Post, accept
from .cli import Seconds
from .errors import DeliveryError, StorageError
from .ledger import SCHEMA_VERSION, current_version
from .notify import webhook_label
from .services import EXTENSION, Services
from .signing import SigningError, check_key
from .smtp import SMTPSettings
from .webhooks import RefusedAddress, resolve_checked

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


@dataclass
class Check:
    """One line of the report."""

    status: str
    name: str
    detail: str
    fix: str = ""


@dataclass
class Report:
    """Everything the doctor found, in order."""

    checks: list[Check] = field(default_factory=list)

    def add(self, status: str, name: str, detail: str, fix: str = "") -> Check:
        check = Check(status, name, detail, fix)
        self.checks.append(check)
        return check

    @property
    def failed(self) -> bool:
        return any(c.status == FAIL for c in self.checks)


def provider_hint(host: str) -> str:
    """Explain AUTH failures the way common providers cause them."""
    host = host.lower()
    if "gmail" in host or "google" in host:
        return (
            "Gmail wants an app password (Google account > Security > App "
            "passwords, with 2-Step Verification on), not the account password"
        )
    if any(p in host for p in ("126.com", "163.com", "yeah.net", "qq.com")):
        return (
            "126/163/QQ want the authorisation code (授权码) from the web mail "
            "settings, after enabling the SMTP service, not the login password"
        )
    if "office365" in host or "outlook" in host:
        return (
            "Microsoft needs SMTP AUTH enabled for this mailbox, and may refuse "
            "basic authentication altogether"
        )
    if "amazonaws" in host:
        return "SES wants its SMTP credentials (SES console), not IAM access keys"
    return "check SMTP_USERNAME and SMTP_PASSWORD (or SMTP_PASSWORD_FILE)"


class Doctor:
    """Run the checks against the app's configuration."""

    def __init__(
        self,
        app: Flask,
        timeout: float = 10.0,
        resolver: Any | None = None,
    ) -> None:
        self.app = app
        self.config = app.config
        self.services: Services = app.extensions[EXTENSION]
        self.timeout = timeout
        self.resolver = resolver
        self.report = Report()

    # -- the whole run -------------------------------------------------------

    def run(self) -> Report:
        """Run every check; return the report."""
        self.report.add(PASS, "configuration", "settings parse")
        if self.config.get("DKIM_DOMAIN"):
            self.check_dkim_key()
        self.check_database()
        if self.config["SMTP_HOST"]:
            self.check_relay()
        else:
            self.report.add(
                SKIP,
                "relay",
                "no SMTP_HOST: development mode writes to a local Maildir",
                "set SMTP_HOST and friends (see docs/deploy.md) to send real mail",
            )
        self.check_dns()
        self.check_notifications()
        return self.report

    # -- webhooks, Apprise, autoresponses ------------------------------------

    def check_notifications(self) -> None:
        """Check each webhook's address, and count deliveries that need an owner.

        Silent for a setup with email only.
        """
        urls = sorted(
            {
                w.url
                for form in self.services.forms.values()
                for w in form.notify.webhooks
            }
        )
        allow = self.services.notify.allow_private
        for url in urls:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            label = webhook_label(url)
            try:
                resolve_checked(parts.hostname or "", port, allow)
            except RefusedAddress as exc:
                self.report.add(
                    FAIL,
                    "webhook",
                    f"{label}: {exc.reply}",
                    "point the webhook at a public address, or set "
                    "WEBHOOK_ALLOW_PRIVATE=true for a receiver on your network",
                )
                continue
            except DeliveryError as exc:
                self.report.add(
                    WARN, "webhook", f"{label}: {exc.reply}", "check the URL's host"
                )
                continue
            self.report.add(PASS, "webhook", f"{label}: resolves to allowed addresses")
        try:
            counts = self.services.ledger.delivery_counts()
        except StorageError:
            return  # the database check has said so
        stuck = {state: counts[state] for state in ("failed", "disabled")}
        if any(stuck.values()):
            self.report.add(
                WARN,
                "notifications",
                f"{stuck['failed']} failed, {stuck['disabled']} disabled "
                "(webhook endpoints that answered 410)",
                "see each submission's Other channels in the console, or "
                "`flask --app wsgi outbox deliveries ID`; retry once fixed",
            )

    # -- DKIM key ------------------------------------------------------------

    def check_dkim_key(self) -> None:
        """Sign a sample message with the configured key, as delivery will.

        Start-up already refuses a key that cannot sign; this catches one
        that stopped signing since (the doctor can run in a live process).
        """
        config = self.config
        try:
            check_key(
                config["DKIM_DOMAIN"],
                config["DKIM_SELECTOR"],
                config["DKIM_PRIVATE_KEY"],
            )
        except SigningError as exc:
            self.report.add(
                FAIL,
                "dkim key",
                str(exc),
                "put an unencrypted RSA private key in PEM in DKIM_PRIVATE_KEY_FILE",
            )
            return
        # A key that signs is part of "settings parse": no line of its own.

    # -- database ----------------------------------------------------------

    def check_database(self) -> None:
        ledger = self.services.ledger
        try:
            ledger.ping()
            version = current_version(ledger.engine)
            stats = ledger.stats()
        except StorageError as exc:
            self.report.add(
                FAIL,
                "database",
                f"not reachable: {type(exc).__name__}",
                "check DATABASE_URL and that the database server is up",
            )
            return
        self.report.add(PASS, "database", f"reachable ({ledger.engine.dialect.name})")
        if version == SCHEMA_VERSION:
            self.report.add(PASS, "schema", f"current (version {version})")
        elif version > SCHEMA_VERSION:
            self.report.add(
                FAIL,
                "schema",
                f"version {version} is newer than this Formpost ({SCHEMA_VERSION})",
                "upgrade Formpost: a newer release has used this database",
            )
        else:
            self.report.add(
                FAIL,
                "schema",
                f"version {version}, this Formpost expects {SCHEMA_VERSION}",
                "start the web or a worker once: the schema upgrades itself",
            )
        age = stats.oldest_pending_age
        detail = f"{stats.backlog} undelivered" + (
            f", oldest {age:.0f} s" if age is not None else ""
        )
        if age is not None and age > 3600:
            self.report.add(
                WARN,
                "backlog",
                detail,
                "is a worker running? `flask --app wsgi outbox list --state pending`",
            )
        else:
            self.report.add(PASS, "backlog", detail)

    # -- relay -------------------------------------------------------------

    def check_relay(self) -> None:
        s = SMTPSettings.from_config(self.config)
        try:
            sock = socket.create_connection((s.host, s.port), timeout=self.timeout)
        except OSError as exc:
            fix = "check SMTP_HOST and SMTP_PORT, and the firewall"
            if s.port == 25:
                fix = (
                    "port 25 is blocked by most cloud hosts: use SMTP_PORT=465 with "
                    "SMTP_SECURITY=tls, or 587 with starttls"
                )
            self.report.add(
                FAIL, "connect", f"{s.host}:{s.port}: {exc.strerror or exc}", fix
            )
            return
        self.report.add(PASS, "connect", f"{s.host}:{s.port} answers")
        sock.close()
        if not self._check_tls_mode(s):
            return
        with self._session(s) as smtp:
            if smtp is None:
                return
            self._check_features(s, smtp)
            if s.username and not self._check_auth(s, smtp):
                return
            self._check_envelope(smtp)

    def _check_tls_mode(self, s: SMTPSettings) -> bool:
        """Tell a TLS port from a plain one, and compare with SMTP_SECURITY."""
        with socket.create_connection((s.host, s.port), timeout=self.timeout) as raw:
            raw.settimeout(min(self.timeout, 3.0))
            try:
                greeting: bytes | None = raw.recv(512)
            except TimeoutError:
                greeting = None  # silence: waiting for a TLS ClientHello
            except OSError:
                greeting = b""  # reset
        if greeting == b"":
            self.report.add(
                FAIL,
                "tls mode",
                f"{s.host}:{s.port} closed the connection at once",
                "the relay may refuse this machine (an allow-list or a ban), or "
                "this is not an SMTP port: check SMTP_PORT and the relay's settings",
            )
            return False
        plain = greeting is not None and greeting[:3].isdigit()
        if s.security == "tls" and plain:
            self.report.add(
                FAIL,
                "tls mode",
                f"SMTP_SECURITY=tls, but {s.host}:{s.port} greets in plain text "
                f"({(greeting or b'')[:40].decode('ascii', 'replace').strip()!r})",
                "use SMTP_SECURITY=starttls on this port (usually 587), or port 465",
            )
            return False
        if s.security != "tls" and not plain:
            self.report.add(
                FAIL,
                "tls mode",
                f"SMTP_SECURITY={s.security}, but {s.host}:{s.port} says nothing "
                "in plain text: it expects a TLS handshake first",
                "use SMTP_SECURITY=tls on this port (usually 465)",
            )
            return False
        self.report.add(PASS, "tls mode", f"{s.security} matches what the port speaks")
        return True

    @contextmanager
    def _session(self, s: SMTPSettings) -> Iterator[smtplib.SMTP | None]:
        context = s.tls_context()
        smtp: smtplib.SMTP | None = None
        try:
            if s.security == "tls":
                smtp = smtplib.SMTP_SSL(
                    s.host, s.port, timeout=self.timeout, context=context
                )
                self._report_certificate(smtp)
                smtp.ehlo()
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=self.timeout)
                smtp.ehlo()
                if s.security == "starttls":
                    if not smtp.has_extn("starttls"):
                        self.report.add(
                            FAIL,
                            "starttls",
                            "the relay does not offer STARTTLS",
                            "use SMTP_SECURITY=tls with port 465, or a relay that "
                            "supports STARTTLS; never send the password in clear",
                        )
                        _quit(smtp)
                        yield None
                        return
                    smtp.starttls(context=context)
                    self._report_certificate(smtp)
                    smtp.ehlo()
        except ssl.SSLCertVerificationError as exc:
            if smtp is not None:
                smtp.close()
            self.report.add(
                FAIL,
                "certificate",
                f"not trusted: {exc.verify_message}",
                "if the relay uses a private CA, set SMTP_CA_FILE; if it is "
                "expired or for another name, the relay's operator must fix it",
            )
            yield None
            return
        except (smtplib.SMTPException, OSError) as exc:
            if smtp is not None:
                smtp.close()
            self.report.add(
                FAIL,
                "session",
                f"could not open: {exc}",
                "check SMTP_SECURITY against the port, and that the relay accepts "
                "connections from this machine",
            )
            yield None
            return
        try:
            yield smtp
        finally:
            _quit(smtp)

    def _report_certificate(self, smtp: smtplib.SMTP) -> None:
        sock = smtp.sock
        cert = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
        if not cert:
            return
        expires = dt.datetime.fromtimestamp(
            ssl.cert_time_to_seconds(cert["notAfter"]), tz=dt.UTC
        )
        days = (expires - dt.datetime.now(dt.UTC)).days
        if days < 14:
            self.report.add(
                WARN,
                "certificate",
                f"valid, but expires in {days} days",
                "tell the relay's operator",
            )
        else:
            self.report.add(PASS, "certificate", f"verified, expires in {days} days")

    def _check_features(self, s: SMTPSettings, smtp: smtplib.SMTP) -> None:
        features = smtp.esmtp_features
        auth = features.get("auth", "").upper().split()
        parts = [f"AUTH {' '.join(auth)}" if auth else "no AUTH"]
        if "size" in features:
            size = features["size"].strip()
            parts.append(f"SIZE {size}" if size else "SIZE")
        parts.append("SMTPUTF8" if "smtputf8" in features else "no SMTPUTF8")
        if s.username and not auth:
            self.report.add(
                FAIL,
                "features",
                ", ".join(parts),
                "the relay offers no AUTH here: unset SMTP_USERNAME, or use the "
                "submission port (587/465)",
            )
        else:
            self.report.add(PASS, "features", ", ".join(parts))

    def _check_auth(self, s: SMTPSettings, smtp: smtplib.SMTP) -> bool:
        try:
            smtp.login(s.username or "", s.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            reply = exc.smtp_error.decode("utf-8", "replace")
            self.report.add(
                FAIL,
                "auth",
                f"refused: {exc.smtp_code} {reply}",
                provider_hint(s.host),
            )
            return False
        except smtplib.SMTPException as exc:
            self.report.add(FAIL, "auth", f"failed: {exc}", provider_hint(s.host))
            return False
        self.report.add(PASS, "auth", f"logged in as {s.username}")
        return True

    def _check_envelope(self, smtp: smtplib.SMTP) -> None:
        mail_from = self.config["MAIL_FROM"].addr_spec
        code, reply = smtp.mail(mail_from)
        if code != 250:
            self.report.add(
                FAIL,
                "mail from",
                f"<{mail_from}> refused: {code} {reply.decode('utf-8', 'replace')}",
                "MAIL_FROM must be an address this account may send as",
            )
            smtp.rset()
            return
        self.report.add(PASS, "mail from", f"<{mail_from}> accepted")
        for alias, recipient in self.config["MAIL_RECIPIENTS"].items():
            address = recipient.address.addr_spec
            code, reply = smtp.rcpt(address)
            if code in (250, 251):
                self.report.add(PASS, f"rcpt {alias}", f"<{address}> accepted")
            else:
                self.report.add(
                    FAIL,
                    f"rcpt {alias}",
                    f"<{address}> refused: {code} {reply.decode('utf-8', 'replace')}",
                    "check the address in MAIL_RECIPIENTS, or whether the relay "
                    "accepts mail for this domain",
                )
        smtp.rset()  # before DATA: nothing is sent

    # -- DNS ---------------------------------------------------------------

    def check_dns(self) -> None:
        try:
            resolve = self._resolver()
            # Any resolver that reaches the DNS knows the root's name servers;
            # a stub on a closed network answers nothing (or NXDOMAIN) for all.
            if not resolve(".", "NS"):
                raise _NoDNS("the resolver does not know the root name servers")
        except _NoDNS as exc:
            self.report.add(SKIP, "dns", f"skipped: no DNS ({exc})")
            return

        def lookup(check: str, name: str, rtype: str) -> list[str] | None:
            # One failing query (SERVFAIL, a timeout) is that check's problem;
            # the other checks still run.
            try:
                return resolve(name, rtype)
            except _NoDNS as exc:
                self.report.add(
                    WARN,
                    check,
                    f"{rtype} query for {name} failed ({exc})",
                    "run the doctor again; if it persists, check that domain's "
                    "name servers, or the resolver (--dns-server)",
                )
                return None

        self._check_records(lookup)

    def _check_txt(
        self,
        lookup: Callable[..., list[str] | None],
        check: str,
        name: str,
        wanted: Callable[[str], bool],
        missing: str,
        fix: str,
    ) -> None:
        """PASS with the first TXT record of `name` that is `wanted`, else WARN.

        Nothing is reported when the lookup itself failed (it said so).
        """
        txt = lookup(check, name, "TXT")
        found = [t for t in txt or () if wanted(t)]
        if found:
            self.report.add(PASS, check, f"{name}: {found[0]}")
        elif txt is not None:
            self.report.add(WARN, check, missing, fix)

    def _check_records(self, lookup: Callable[..., list[str] | None]) -> None:
        domain = self.config["MAIL_FROM"].domain
        self._check_txt(
            lookup,
            "spf",
            domain,
            lambda t: t.startswith("v=spf1"),
            f"{domain} has no SPF record",
            f"publish a TXT record on {domain} such as 'v=spf1 include:<your "
            "provider> ~all'",
        )
        self._check_txt(
            lookup,
            "dmarc",
            f"_dmarc.{domain}",
            lambda t: "v=DMARC1" in t,
            f"_dmarc.{domain} has no DMARC record",
            f"publish TXT 'v=DMARC1; p=none; rua=mailto:dmarc@{domain}' to start",
        )
        seen = set()
        for recipient in self.config["MAIL_RECIPIENTS"].values():
            rdomain = recipient.address.domain
            if rdomain in seen:
                continue
            seen.add(rdomain)
            found = lookup(f"mx {rdomain}", rdomain, "MX")
            if found is None:
                continue
            mx = [host for host in found if host]
            if found and not mx:
                self.report.add(
                    FAIL,
                    f"mx {rdomain}",
                    f"{rdomain} publishes a null MX: it accepts no mail (RFC 7505)",
                    "check the domain of the address in MAIL_RECIPIENTS",
                )
            elif mx:
                self.report.add(PASS, f"mx {rdomain}", ", ".join(sorted(mx)))
            else:
                self.report.add(
                    FAIL,
                    f"mx {rdomain}",
                    f"{rdomain} has no MX record: mail to it cannot be delivered",
                    "check the domain of the address in MAIL_RECIPIENTS",
                )
        if self.config.get("DKIM_DOMAIN"):
            self._check_dkim_record(lookup)

    def _check_dkim_record(self, lookup: Callable[..., list[str] | None]) -> None:
        selector, domain = self.config["DKIM_SELECTOR"], self.config["DKIM_DOMAIN"]
        name = f"{selector}._domainkey.{domain}"
        txt = lookup("dkim", name, "TXT")
        if txt is None:
            return
        records = [t for t in txt if "p=" in t]
        if not records:
            self.report.add(
                FAIL,
                "dkim",
                f"no key published at {name}",
                f"publish TXT {name} 'v=DKIM1; k=rsa; p=<public key>' (docs/deploy.md)",
            )
            return
        published = dict(
            part.strip().split("=", 1) for part in records[0].split(";") if "=" in part
        ).get("p", "")
        if published.replace(" ", "") == _public_key_b64(
            self.config["DKIM_PRIVATE_KEY"]
        ):
            self.report.add(PASS, "dkim", f"{name} matches DKIM_PRIVATE_KEY_FILE")
        else:
            self.report.add(
                FAIL,
                "dkim",
                f"{name} holds a different key than DKIM_PRIVATE_KEY_FILE",
                "publish the public half of the configured key, or fix the selector",
            )

    def _resolver(self) -> Callable[..., list[str]]:
        import dns.exception
        import dns.resolver

        resolver = self.resolver
        if resolver is None:
            try:
                resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration as exc:
                raise _NoDNS("no resolver configured") from exc
        resolver.lifetime = min(self.timeout, 5.0)

        def resolve(name: str, rtype: str) -> list[str]:
            try:
                answer = resolver.resolve(name, rtype)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                return []
            except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
                raise _NoDNS(type(exc).__name__) from exc
            if rtype == "TXT":
                return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
            if rtype == "MX":
                return [str(r.exchange).rstrip(".") for r in answer]
            return [r.to_text() for r in answer]

        return resolve

    # -- a real message ------------------------------------------------------

    def send_test(self, alias: str, wait: float) -> None:
        """Queue a real test message to `alias` and wait for its outcome."""
        recipients = self.config["MAIL_RECIPIENTS"]
        if alias not in recipients:
            self.report.add(
                FAIL,
                "send test",
                f"no alias {alias!r}",
                f"use one of: {', '.join(recipients)}",
            )
            return
        ledger = self.services.ledger
        subject = "Formpost test message"
        receipt = accept(
            self.services,
            Post(
                form_id="doctor",
                recipient=alias,
                subject=subject,
                message="This is a test message sent by `flask --app wsgi doctor`.",
                scored=False,  # the operator's own test: no spam gate
            ),
        )
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            # By receipt: on a busy service it need not be among the newest.
            row = ledger.row(receipt)
            if row is None:  # purged by an operator meanwhile
                self.report.add(FAIL, "send test", f"receipt {receipt} is gone")
                return
            if row.state == "sent":
                self.report.add(
                    PASS, "send test", f"receipt {receipt}: {row.last_reply}"
                )
                return
            if row.state == "failed":
                self.report.add(
                    FAIL,
                    "send test",
                    f"receipt {receipt}: {row.last_reply}",
                    "the relay refused the message: its reply says why; see "
                    "`flask --app wsgi outbox list --state failed`",
                )
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        self.report.add(
            FAIL,
            "send test",
            f"receipt {receipt} still {row.state} after {wait:.0f} s"
            + (f" ({row.last_reply})" if row.last_reply else ""),
            "is a worker running (`flask --app wsgi worker`)? It stays queued.",
        )


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


class _NoDNS(Exception):
    """No usable DNS here: the DNS checks are skipped, not failed."""


def _public_key_b64(private_pem: bytes) -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_pem, password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


class DNSServer(click.ParamType):
    """HOST or HOST:PORT of a DNS server: an IP address, and a port 1-65535."""

    name = "host[:port]"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: Any
    ) -> tuple[str, int]:
        """Return (address, port), or fail with a usage error saying why."""
        import ipaddress

        host, port = str(value), "53"
        if host.startswith("["):  # [::1]:5353
            host, _, rest = host[1:].partition("]")
            port = rest.removeprefix(":") or port
        elif host.count(":") == 1:
            host, _, port = host.partition(":")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            self.fail(f"{host!r} is not an IP address", param, ctx)
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            self.fail(f"port {port!r} is not a number from 1 to 65535", param, ctx)
        return host, int(port)


@click.command("doctor")
@click.option("--send-test", "alias", help="Also send a real test message to ALIAS.")
@click.option(
    "--timeout",
    type=Seconds(0, 600, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds per check.",
)
@click.option(
    "--wait",
    type=Seconds(0, 86400),
    default=60.0,
    show_default=True,
    help="Seconds to wait for --send-test.",
)
@click.option(
    "--dns-server",
    type=DNSServer(),
    help="Ask this DNS server (HOST or HOST:PORT) instead of the system's.",
)
def doctor_command(
    alias: str | None, timeout: float, wait: float, dns_server: tuple[str, int] | None
) -> None:
    """Check configuration, database, relay and DNS; exit 1 on any failure."""
    resolver = None
    if dns_server:
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns_server[0]]
        resolver.port = dns_server[1]
    doctor = Doctor(current_app._get_current_object(), timeout, resolver)  # type: ignore[attr-defined]
    report = doctor.run()
    if alias:
        doctor.send_test(alias, wait)
    marks = {PASS: "PASS", WARN: "WARN", FAIL: "FAIL", SKIP: "SKIP"}
    for check in report.checks:
        click.echo(f"{marks[check.status]}  {check.name:<14} {check.detail}")
        if check.fix and check.status in (WARN, FAIL):
            click.echo(f"      {'':<14} fix: {check.fix}")
    failed = sum(c.status == FAIL for c in report.checks)
    click.echo(f"\n{failed} failed, {len(report.checks)} checks")
    raise SystemExit(1 if report.failed else 0)
