"""The ways a message leaves: e-mail over SMTP (aiosmtplib) and SMS through a JSON webhook (httpx).

Each channel says how a send failed: ``TemporaryDeliveryError`` (connection refused or lost, SMTP
4xx, HTTP 5xx or 429: worth another attempt) or ``PermanentDeliveryError`` (SMTP 5xx, an address
that cannot be one, HTTP 4xx: never worth another). Neither names the address or the text.
"""

import email.utils
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx

from shared.settings import Settings


class DeliveryError(Exception):
    """A send that did not go through; ``reason`` is safe to log and record (``stored``: the
    notification as recorded after it, set by whoever recorded it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stored: Any = None


class TemporaryDeliveryError(DeliveryError):
    """Failed for a passing reason: another attempt may succeed."""


class PermanentDeliveryError(DeliveryError):
    """Can never succeed as it is: not tried again."""


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    html: str
    message_id: str
    locale: str


class EmailChannel:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def domain(self) -> str:
        address = email.utils.parseaddr(self.settings.smtp_sender)[1]
        return address.rpartition("@")[2] or "selfex.invalid"

    def message(self, mail: Mail) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.smtp_sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Message-ID"] = mail.message_id
        message["Date"] = email.utils.formatdate(localtime=False)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(mail.text)
        message.add_alternative(mail.html, subtype="html")
        message["Content-Language"] = mail.locale  # after the content: setting it clears Content-* headers
        return message

    async def send(self, mail: Mail) -> None:
        if not _plausible_address(mail.to):
            raise PermanentDeliveryError("invalid e-mail address")
        settings = self.settings
        try:
            await aiosmtplib.send(
                self.message(mail),
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username or None,
                password=settings.smtp_password.get_secret_value() or None,
                use_tls=settings.smtp_security == "tls",
                start_tls=settings.smtp_security == "starttls",
                timeout=settings.smtp_timeout_seconds,
                cert_bundle=settings.smtp_ca_file or None,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            raise _by_code(min(codes) if codes else 550, "recipient refused") from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _by_code(exc.code, type(exc).__name__) from exc
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            raise TemporaryDeliveryError(f"SMTP server unreachable ({type(exc).__name__})") from exc


class SmsWebhookChannel:
    """A generic SMS provider: ``POST url`` with ``{"to", "text", "reference"}`` and ``Authorization: Bearer token``."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.sms_webhook_url
        self.token = settings.sms_webhook_token.get_secret_value()
        self.timeout = settings.smtp_timeout_seconds

    @property
    def configured(self) -> bool:
        return bool(self.url)

    async def send(self, to: str, text: str, reference: str) -> None:
        if not self.configured:
            raise PermanentDeliveryError("no SMS provider is configured")
        if not (to.startswith("+") and to[1:].isdigit() and 8 <= len(to) <= 16):
            raise PermanentDeliveryError("invalid mobile number")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                answer = await client.post(self.url, json={"to": to, "text": text, "reference": reference}, headers=headers)
        except httpx.HTTPError as exc:
            raise TemporaryDeliveryError(f"SMS provider unreachable ({type(exc).__name__})") from exc
        if answer.status_code == 429 or answer.status_code >= 500:
            raise TemporaryDeliveryError(f"SMS provider answered {answer.status_code}")
        if answer.status_code >= 400:
            raise PermanentDeliveryError(f"SMS provider answered {answer.status_code}")


def _by_code(code: int, what: str) -> DeliveryError:
    if 400 <= code < 500:
        return TemporaryDeliveryError(f"SMTP {code}: {what}")
    return PermanentDeliveryError(f"SMTP {code}: {what}")


def _plausible_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(at and local and "." in domain and not any(c.isspace() or c in "<>,;" for c in address))
