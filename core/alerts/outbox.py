"""How an alert leaves: a JSON POST to a webhook, Slack's incoming-webhook shape, or an email
through AI_CONSOLE_SMTP_URL.

Webhooks go through core.providers.egress's client: no redirects, no proxies, every connection
vetted against the allowlist after resolving the host once (no DNS rebinding). Email connects to
the SMTP server's vetted address too, while TLS still checks the certificate against its name.
A failure is a DeliveryError whose message names the host and what went wrong, never the URL
(a Slack URL's path is its credential) nor the SMTP password.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx2

from core.admin.credentials import run_blocking
from core.config import Settings, SmtpServer
from core.crypto import SecretBox
from core.models import AlertChannel
from core.providers.egress import (
    Allowlist,
    EgressRefused,
    Resolver,
    egress_client,
    refusal_in,
    system_resolve,
    vet_host,
)

TIMEOUT_S = 10.0
USER_AGENT = "ai-provider-console-alerts/1"


class DeliveryError(Exception):
    """An alert could not be delivered; the message is safe to store, audit and show."""


@dataclass(frozen=True)
class Message:
    """One alert: a subject, a text for people, and the JSON body a webhook receives."""

    subject: str
    text: str
    body: dict[str, Any]

    def also_crossed(self, lower: list[int]) -> Message:
        """This alert, saying it stands for the lower thresholds crossed with it."""
        passed = " and ".join(f"{t}%" for t in lower)
        text = f"{self.text}\n(It passed {passed} since the last check too.)"
        return Message(self.subject, text, self.body | {"text": text, "also_crossed": lower})


@dataclass(frozen=True)
class Outbox:
    """What sending needs: the cipher for stored targets, the egress policy, the SMTP server
    and From address (None/"" when email is not configured)."""

    cipher: SecretBox
    allowlist: Allowlist = field(default_factory=Allowlist)
    smtp: SmtpServer | None = None
    sender: str = ""
    resolve: Resolver = system_resolve
    timeout_s: float = TIMEOUT_S

    @classmethod
    def from_settings(cls, settings: Settings, cipher: SecretBox) -> Outbox:
        return cls(
            cipher=cipher,
            allowlist=Allowlist.from_entries(settings.base_url_allowlist),
            smtp=settings.smtp,
            sender=settings.alert_from,
        )

    @property
    def smtp_host(self) -> tuple[str, int] | None:
        return None if self.smtp is None else (self.smtp.host, self.smtp.port)

    def send(self, channel: str, target: str, message: Message) -> None:
        """Deliver `message`; DeliveryError when it did not arrive (whatever went wrong: its
        message never quotes the target, whose path may hold a token)."""
        try:
            if channel == AlertChannel.EMAIL.value:
                self._email(target, message)
            elif channel == AlertChannel.SLACK.value:
                run_blocking(self._post(target, {"text": message.text}))
            else:
                run_blocking(self._post(target, message.body))
        except DeliveryError:
            raise
        except Exception as exc:  # a target the checks let through that the client refuses
            raise DeliveryError(f"could not send ({type(exc).__name__})") from None

    async def _post(self, url: str, payload: dict[str, Any]) -> None:
        host = httpx2.URL(url).host
        try:
            async with egress_client(
                self.allowlist,
                resolve=self.resolve,
                timeout=self.timeout_s,
                headers={"User-Agent": USER_AGENT},
            ) as client:
                response = await client.post(url, json=payload)
        except httpx2.TimeoutException:
            raise DeliveryError(f"{host} did not answer within {self.timeout_s:g} s") from None
        except httpx2.HTTPError as exc:
            refused = refusal_in(exc)
            if refused is not None:
                raise DeliveryError(_as_webhook(str(refused))) from None
            raise DeliveryError(f"could not reach {host} ({type(exc).__name__})") from None
        if response.is_redirect:
            raise DeliveryError(
                f"{host} answered HTTP {response.status_code} (redirects are not followed)"
            )
        if not response.is_success:
            raise DeliveryError(f"{host} answered HTTP {response.status_code}")

    def _email(self, to: str, message: Message) -> None:
        server = self.smtp
        if server is None or not self.sender:
            raise DeliveryError("email alerts need AI_CONSOLE_SMTP_URL and AI_CONSOLE_ALERT_FROM")
        try:
            addresses = vet_host(
                server.host, server.port, self.allowlist, self.resolve, subject="SMTP server"
            )
        except EgressRefused as exc:
            raise DeliveryError(str(exc)) from None
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = to
        mail["Subject"] = _one_line(message.subject)
        mail.set_content(message.text + "\n")
        address = str(addresses[0]) if addresses else None
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        try:
            if server.tls:
                smtp = _PinnedSMTPSSL(address, timeout=self.timeout_s, context=context)
            else:
                smtp = _PinnedSMTP(address, timeout=self.timeout_s)
            with smtp:
                smtp.connect(server.host, server.port)
                if server.starttls:
                    smtp.starttls(context=context)
                if server.username:
                    smtp.login(server.username, server.password)
                smtp.send_message(mail, to_addrs=[to])
        except smtplib.SMTPAuthenticationError:
            raise DeliveryError(
                f"{server.host} refused the user name and password of AI_CONSOLE_SMTP_URL"
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{server.host} answered SMTP {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                f"could not send through {server.host}:{server.port} ({type(exc).__name__})"
            ) from None


class _Pinned:
    """Connects to the vetted address while TLS checks the certificate against the host name
    (smtplib keeps the name it was given for SNI and verification)."""

    def __init__(self, address: str | None, **kwargs: Any) -> None:
        self._address = address
        super().__init__(**kwargs)  # type: ignore[call-arg]

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return super()._get_socket(self._address or host, port, timeout)  # type: ignore[misc]


class _PinnedSMTP(_Pinned, smtplib.SMTP):
    pass


class _PinnedSMTPSSL(_Pinned, smtplib.SMTP_SSL):
    pass


def _as_webhook(refusal: str) -> str:
    """A refusal of the connection-time check (worded for base URLs) as a webhook's."""
    return refusal.replace("base URL", "webhook URL").replace("provider endpoints", "hosts")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
