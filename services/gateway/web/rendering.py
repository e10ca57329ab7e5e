"""Pages from Jinja2 templates, each with its words in the page's language, dates written for people,
and the language switch; the chosen language is remembered in a cookie."""

from datetime import date, datetime
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import HTMLResponse

from services.gateway.web.texts import LANGUAGE_COOKIE, LANGUAGES, Words, language_of

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"],
    "sv": ["januari", "februari", "mars", "april", "maj", "juni", "juli", "augusti", "september", "oktober", "november", "december"],
}


def day(value: Any, language: str = "en") -> str:
    """``2026-12-04`` (or a datetime, or its ISO text) as ``4 December 2026`` / ``4 december 2026``."""
    moment = as_datetime(value)
    if moment is None:
        return ""
    return f"{moment.day} {MONTHS[language][moment.month - 1]} {moment.year}"


def as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def page(request: Request, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The template rendered in the request's language; ``?lang=`` is remembered for the next pages."""
    language = language_of(request)
    words = Words(language)
    other = next(code for code in LANGUAGES if code != language)
    response = templates.TemplateResponse(
        request,
        template,
        {
            "t": words,
            "lang": language,
            "other_lang": other,
            "switch_url": request.url.include_query_params(lang=other),
            "day": lambda value: day(value, language),
            **context,
        },
        status_code=status_code,
    )
    if request.query_params.get("lang") in LANGUAGES:
        response.set_cookie(LANGUAGE_COOKIE, language, max_age=365 * 24 * 3600, httponly=True, secure=True, samesite="lax")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; object-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response
