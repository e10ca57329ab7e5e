"""What the browser tests share: Debian's Chromium through Playwright, the codes from the stack's
SMTP sink, axe-core from npm, and a screenshot of each test's last page."""

import re
import time
from email.message import EmailMessage
from pathlib import Path

from playwright.sync_api import Page

from selfex.mail import body, read, stored

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"
CODE = re.compile(r"\b([0-9]{6})\b")


def mail_to(folder: Path, address: str, *, after: int = 0, subject: str = "code", timeout: float = 30.0) -> EmailMessage:
    """The first message the sink kept for ``address`` whose subject has ``subject``, past the first
    ``after`` messages (polled with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        for path in stored(folder)[after:]:
            message = read(path)
            if address in str(message.get("To", "")) and subject in str(message.get("Subject", "")):
                return message
        if time.monotonic() >= deadline:
            raise AssertionError(f"no mail to {address} within {timeout:.0f} s; kept: {len(stored(folder))}")
        time.sleep(0.1)


def code_in(message: EmailMessage) -> str:
    found = CODE.search(body(message))
    assert found, f"no 6-digit code in the message: {body(message)[:500]}"
    return found.group(1)


def mail_count(folder: Path) -> int:
    return len(stored(folder))


def serious_violations(page: Page) -> list[dict]:
    """axe-core's serious and critical violations on the page as it stands (WCAG 2 A/AA rules and best practices)."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    results = page.evaluate("async () => await window.axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def accessible(page: Page) -> None:
    violations = serious_violations(page)
    assert violations == [], f"{page.url}: {violations}"
