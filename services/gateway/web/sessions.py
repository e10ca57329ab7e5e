"""Sessions in a cookie the browser cannot read or forge: the session's JSON sealed with the
deployment's encryption key (AES-256-GCM, ``shared.crypto.Sealer``), bound to the cookie's name, with
the time it was written; older than ``max_age`` it is no session. ``HttpOnly``, ``Secure`` and
``SameSite=Lax`` always (browsers keep ``Secure`` cookies of ``http://localhost`` and ``127.0.0.1``).

Every form that changes something carries the session's CSRF token, compared in constant time, and
a POST whose ``Origin`` names another site is refused before that.
"""

import base64
import json
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from shared.crypto import Sealer, SealError

CSRF_FIELD = "csrf"


class Sessions:
    """One kind of session (the portal's, the console's), in one cookie."""

    def __init__(self, sealer: Sealer, cookie: str, max_age: int, clock=time.time) -> None:
        self.sealer = sealer
        self.cookie = cookie
        self.max_age = max_age
        self._clock = clock

    def read(self, request: Request) -> dict[str, Any]:
        """The session, or a new empty one (with a fresh CSRF token) when there is none, or it is forged or old."""
        raw = request.cookies.get(self.cookie)
        if raw:
            try:
                token = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
                session = json.loads(self.sealer.open_text(token, f"web-session:{self.cookie}"))
                if isinstance(session, dict) and self._clock() - float(session.get("at", 0)) <= self.max_age:
                    return session
            except (SealError, ValueError, UnicodeDecodeError):
                pass
        return {CSRF_FIELD: secrets.token_urlsafe(24)}

    def write(self, response: Response, session: dict[str, Any]) -> None:
        session = {**session, "at": self._clock()}
        session.setdefault(CSRF_FIELD, secrets.token_urlsafe(24))
        token = self.sealer.seal_text(json.dumps(session, separators=(",", ":")), f"web-session:{self.cookie}")
        value = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
        response.set_cookie(self.cookie, value, max_age=self.max_age, httponly=True, secure=True, samesite="lax", path="/")

    def clear(self, response: Response) -> None:
        response.delete_cookie(self.cookie, path="/", httponly=True, secure=True, samesite="lax")


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site (``Origin``, else ``Referer``)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin != "null"
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1].split("/", 1)[0] == host


def csrf_ok(request: Request, session: dict[str, Any], sent: object) -> bool:
    """The form's token is the session's, and the form came from this site."""
    expected = session.get(CSRF_FIELD)
    return (
        same_origin(request)
        and isinstance(sent, str)
        and isinstance(expected, str)
        and secrets.compare_digest(sent.encode(), expected.encode())
    )
