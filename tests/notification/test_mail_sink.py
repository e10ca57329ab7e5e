"""The development stack's SMTP sink keeps each message under the data folder; ``selfex mail`` reads them back."""

import os
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from selfex.mail import MailSink
from shared.infra import free_port

SELFEX = str(Path(sys.executable).parent / "selfex")


def selfex_mail(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SELFEX_DATA_DIR": str(data_dir)}
    return subprocess.run([SELFEX, "mail", *args], env=env, capture_output=True, text=True, timeout=60)


async def test_kept_mail_is_listed_and_shown_by_number(tmp_path):
    sink = MailSink(tmp_path / "mail", port=free_port()).start()
    try:
        for number in (1, 2):
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = "selfex@example.se", f"p{number}@example.se", f"Letter {number}"
            message.set_content(f"Your one-time code is 00000{number}.")
            message.add_alternative(f"<p>code 00000{number}</p>", subtype="html")
            await aiosmtplib.send(message, hostname="127.0.0.1", port=sink.port)
    finally:
        sink.stop()

    assert sorted(p.name for p in (tmp_path / "mail").iterdir()) == ["0001.eml", "0002.eml"]
    listed = selfex_mail(tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[-2:] for line in listed.stdout.splitlines()] == [["Letter", "1"], ["Letter", "2"]]
    shown = selfex_mail(tmp_path, "show", "2")
    assert "Subject: Letter 2" in shown.stdout and "Your one-time code is 000002." in shown.stdout
    assert "<p>code 000002</p>" in selfex_mail(tmp_path, "show", "2", "--html").stdout
    missing = selfex_mail(tmp_path, "show", "3")
    assert missing.returncode == 2 and "no message 3" in missing.stderr
