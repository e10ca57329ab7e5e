"""The local mail sink of a development stack, and ``selfex mail list`` / ``selfex mail show N`` to read it.

``selfex up`` on the embedded servers starts an SMTP server (aiosmtpd) that accepts every message and
keeps each one, as it arrived, in ``<data dir>/mail/NNNN.eml``; the notification service sends to it.
Nothing leaves the machine. A real deployment names its SMTP server (``SELFEX_SMTP_*``) instead.
"""

import argparse
import email
import email.policy
import sys
import threading
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import structlog

from shared.settings import Settings

log = structlog.get_logger(__name__)


def mail_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "mail"


class MailSink:
    """An SMTP server on ``host:port`` that keeps every message under ``folder``, numbered in arrival order."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 1025) -> None:
        self.folder = folder
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._controller: Any = None

    async def handle_DATA(self, server, session, envelope) -> str:
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            number = len(stored(self.folder)) + 1
            path = self.folder / f"{number:04d}.eml"
            partial = path.with_suffix(".part")
            partial.write_bytes(envelope.content)
            partial.rename(path)
        log.info("mail_kept", number=number, path=str(path), read_with=f"selfex mail show {number}")
        return "250 Message accepted"

    def start(self) -> "MailSink":
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def stored(folder: Path) -> list[Path]:
    """The kept messages, oldest first."""
    return sorted(folder.glob("*.eml")) if folder.is_dir() else []


def read(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage), "the default policy makes EmailMessages"
    return message


def body(message: EmailMessage, subtype: str = "plain") -> str:
    part = message.get_body(preferencelist=(subtype,))
    return part.get_content() if part is not None else ""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="selfex mail", description="The mail the development stack's SMTP sink kept.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="one line per message: number, date, recipient, subject")
    show = commands.add_parser("show", help="one message: its headers and text (or its HTML, or as it arrived)")
    show.add_argument("number", type=int)
    form = show.add_mutually_exclusive_group()
    form.add_argument("--html", action="store_true", help="the HTML part instead of the text")
    form.add_argument("--raw", action="store_true", help="the message as it arrived")
    args = parser.parse_args(argv)

    folder = mail_dir(Settings())
    messages = stored(folder)
    if args.command == "list":
        if not messages:
            print(f"no mail under {folder}/ yet")
        for number, path in enumerate(messages, start=1):
            message = read(path)
            print(f"{number:4d}  {message['Date'] or '-'}  {message['To'] or '-'}  {message['Subject'] or '-'}")
        return 0
    if not 1 <= args.number <= len(messages):
        print(f"selfex mail: no message {args.number} under {folder}/ ({len(messages)} kept)", file=sys.stderr)
        return 2
    path = messages[args.number - 1]
    if args.raw:
        sys.stdout.write(path.read_bytes().decode(errors="replace"))
        return 0
    message = read(path)
    for header in ("Date", "From", "To", "Subject", "Message-ID"):
        print(f"{header}: {message[header] or '-'}")
    print(f"File: {path}\n")
    print(body(message, "html" if args.html else "plain"))
    return 0
