"""The self-exclusion notice an operator redirects an excluded person to: a link whose token says
until when the person is excluded (or "until further notice") and in which jurisdiction, sealed with
the deployment's key (so it cannot be forged or read) and expiring; it names nobody.

Operators get links from ``POST /v1/notices`` with the person's identity and their ``check`` key.
"""

import base64
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from shared.crypto import Sealer, SealError

CONTEXT = "web-notice"
LINK_LIFETIME = timedelta(days=7)


@dataclass(frozen=True)
class Notice:
    """What a notice link shows: the date the block ends (None: until further notice), where it applies."""

    until: date | None
    jurisdiction: str | None


def notice_token(sealer: Sealer, notice: Notice, now: datetime, lifetime: timedelta = LINK_LIFETIME) -> str:
    body = {
        "until": notice.until.isoformat() if notice.until else None,
        "jurisdiction": notice.jurisdiction,
        "expires": (now + lifetime).timestamp(),
    }
    sealed = sealer.seal_text(json.dumps(body, separators=(",", ":")), CONTEXT)
    return base64.urlsafe_b64encode(sealed.encode()).decode().rstrip("=")


def read_notice(sealer: Sealer, token: str, now: datetime) -> Notice | None:
    """The notice, or None when the token is forged, altered, for something else, or expired."""
    try:
        sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        body = json.loads(sealer.open_text(sealed, CONTEXT))
        if now.timestamp() > float(body["expires"]):
            return None
        until = date.fromisoformat(body["until"]) if body.get("until") else None
        return Notice(until=until, jurisdiction=body.get("jurisdiction"))
    except (SealError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
