"""The compliance console's pages (``/console``), for register staff and the regulator.

Sign-in is with a staff key (``selfex staff add``): the key is kept only in the sealed session cookie
and admitted again by the gateway's gatekeeper on every page, so a revoked key stops working within
the gatekeeper's cache time; each page needs the permission its action needs (``COMPLIANCE``, as the
compliance routes do, to read the audit log; ``REVIEW`` to see and decide on a document). Forms carry the session's CSRF token.
The audit log's data comes from the gateway's compliance queries (``services.gateway.compliance``,
answered by the audit service: docs/adr/0007), called as the key's holder would call them.
"""

import asyncio
import json
from collections.abc import Awaitable
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError

from services.gateway import compliance
from services.gateway.access import (
    STAFF_ROLES,
    KeyMissingError,
    Operator,
    Permission,
    PermissionMissingError,
    RateLimitedError,
    WrongKeyError,
)
from services.gateway.context import gateway
from services.gateway.problems import Problem
from services.gateway.web import reviews, trends
from services.gateway.web.rendering import page
from services.gateway.web.sessions import CSRF_FIELD, Sessions, csrf_ok

router = APIRouter(prefix="/console", include_in_schema=False)
SESSION_SECONDS = 60 * 60
PAGE_SIZES = ("10", "50", "100", "500")
IDENTITY_FIELDS = ("email", "mobile", "national_id", "first_name", "last_name", "date_of_birth", "postcode")
EVENT_TYPES = (
    "exclusion.request",
    "exclusion.activated",
    "exclusion.extended",
    "exclusion.lift_requested",
    "exclusion.lifted",
    "exclusion.expired",
    "verification.progressed",
    "decision.made",
    "enforcement.commanded",
    "notification.delivered",
    "gateway.request_handled",
    "message.dead_lettered",
)


def sessions(request: Request) -> Sessions:
    return Sessions(request.app.state.sealer, "selfex_console", SESSION_SECONDS)


class SignedOut(Exception):
    """No session, or its key no longer admitted."""


async def staff(request: Request, session: dict[str, Any], permission: Permission = Permission.COMPLIANCE) -> Operator:
    """The staff member behind the session's key, admitted now for ``permission``."""
    key = session.get("key")
    if not key:
        raise SignedOut
    try:
        return await gateway(request).gatekeeper.admit(key, permission)
    except (KeyMissingError, WrongKeyError):
        raise SignedOut from None


def shown(
    request: Request, template: str, session: dict[str, Any], who: Operator | None, *, status_code: int = 200, **context: Any
) -> Response:
    response = page(request, template, status_code=status_code, csrf=session[CSRF_FIELD], who=who, **context)
    sessions(request).write(response, session)
    return response


async def admitted(request: Request, permission: Permission = Permission.COMPLIANCE) -> tuple[dict[str, Any], Operator] | Response:
    """The session and its staff member, or the answer for a browser that may not see the page."""
    session = sessions(request).read(request)
    try:
        return session, await staff(request, session, permission)
    except SignedOut:
        return signed_out(request)
    except (PermissionMissingError, RateLimitedError) as exc:
        return refused(request, session, exc)


def signed_out(request: Request) -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    sessions(request).clear(response)
    return response


def refused(request: Request, session: dict[str, Any], exc: Exception) -> Response:
    """A key that may not do this (403), or that is over its rate limit (429)."""
    status = 429 if isinstance(exc, RateLimitedError) else 403
    return shown(request, "console/refused.html", session, None, status_code=status, reason=str(exc))


# --- signing in and out --------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> Response:
    return shown(request, "console/login.html", sessions(request).read(request), None, error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    session = sessions(request).read(request)
    form = await request.form()
    key = str(form.get("key", "")).strip()
    error = None
    if not csrf_ok(request, session, form.get(CSRF_FIELD)):
        error = "error_csrf"
    else:
        try:
            who = await gateway(request).gatekeeper.admit(key, Permission.COMPLIANCE)
            if not (who.staff and who.roles & STAFF_ROLES):
                raise PermissionMissingError(who, Permission.COMPLIANCE)
        except (KeyMissingError, WrongKeyError, PermissionMissingError, RateLimitedError):
            error = "console_wrong_key"
    if error:
        return shown(request, "console/login.html", session, None, status_code=400, error=error)
    fresh = {"key": key}  # a new session (and CSRF token) at sign-in
    response = RedirectResponse("/console", status_code=303)
    sessions(request).write(response, fresh)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = sessions(request).read(request)
    form = await request.form()
    if not csrf_ok(request, session, form.get(CSRF_FIELD)):
        return RedirectResponse("/console", status_code=303)
    return signed_out(request)


@router.get("", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    entry = await admitted(request)
    if isinstance(entry, Response):
        return entry
    session, who = entry
    queue = await reviews.waiting(request.app.state.db)
    return shown(request, "console/home.html", session, who, queue=len(queue))


# --- the audit log: search, export, statement ---------------------------------------------------


def criteria(form: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """A search's fields as typed, and as the compliance query takes them."""
    typed = {name: str(form.get(name, "")).strip()[:200] for name in (*IDENTITY_FIELDS, "operator_id", "type", "from", "to", "limit")}
    query: dict[str, Any] = {}
    identity = {name: typed[name] for name in IDENTITY_FIELDS if typed[name]}
    if identity:
        query["identity"] = identity
    if typed["operator_id"]:
        query["operator_id"] = typed["operator_id"]
    if typed["type"]:
        query["types"] = [typed["type"]]
    for name in ("from", "to"):
        if typed[name]:
            query[name] = _moment(typed[name])
    return query, typed


def _page_size(typed: dict[str, str]) -> int:
    return int(typed["limit"]) if typed.get("limit") in PAGE_SIZES else 50


def _moment(text: str) -> str:
    """A day typed as YYYY-MM-DD means its first moment in UTC; anything else goes as typed."""
    try:
        return datetime.combine(date.fromisoformat(text), time(), UTC).isoformat()
    except ValueError:
        return text


async def answered(answer: Awaitable[Response]) -> tuple[Any, str | None]:
    """What a compliance route answered, as JSON; or None and its refusal's words."""
    try:
        return json.loads(await body_of(await answer)), None
    except Problem as problem:
        return None, problem.error


async def body_of(response: Response) -> bytes:
    """A response's whole body, streamed or not (a streamed one's clean-up run after)."""
    if isinstance(response, StreamingResponse):
        chunks = [chunk async for chunk in response.body_iterator]
        if response.background is not None:
            await response.background()
        return b"".join(chunk if isinstance(chunk, bytes) else str(chunk).encode() for chunk in chunks)
    return bytes(response.body)


@router.get("/audit", response_class=HTMLResponse)
async def audit_form(request: Request) -> Response:
    entry = await admitted(request)
    if isinstance(entry, Response):
        return entry
    session, who = entry
    return shown(
        request,
        "console/audit.html",
        session,
        who,
        typed={},
        records=None,
        next_cursor=None,
        error=None,
        types=EVENT_TYPES,
        page_sizes=PAGE_SIZES,
    )


@router.post("/audit", response_class=HTMLResponse)
async def audit_search(request: Request) -> Response:
    entry = await admitted(request)
    if isinstance(entry, Response):
        return entry
    session, who = entry
    form = await request.form()
    query, typed = criteria(form)
    records, next_cursor, error = None, None, None
    if not csrf_ok(request, session, form.get(CSRF_FIELD)):
        error = "This form had expired. Please send it again."
    else:
        cursor = str(form.get("cursor", "")) or None
        try:
            body = compliance.RecordPageQuery.model_validate({**query, "cursor": cursor, "limit": _page_size(typed)})
            found = json.loads(await body_of(await compliance.search_records(body, who, request)))
            records, next_cursor = found.get("records", []), found.get("next_cursor")
        except ValidationError as exc:
            error = _invalid(exc)
        except Problem as problem:
            error = f"{problem.field + ': ' if problem.field else ''}{problem.error}"
    status_code = 400 if error else 200
    return shown(
        request,
        "console/audit.html",
        session,
        who,
        status_code=status_code,
        typed=typed,
        records=records,
        next_cursor=next_cursor,
        error=error,
        types=EVENT_TYPES,
        page_sizes=PAGE_SIZES,
        page_number=int(str(form.get("page", "1")) or 1) if str(form.get("page", "1")).isdigit() else 1,
    )


def _invalid(exc: ValidationError) -> str:
    first = exc.errors(include_input=False, include_url=False)[0]
    return f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"


@router.post("/audit/export")
async def audit_export(request: Request) -> Response:
    entry = await admitted(request)
    if isinstance(entry, Response):
        return entry
    session, who = entry
    form = await request.form()
    if not csrf_ok(request, session, form.get(CSRF_FIELD)):
        return refused(request, session, PermissionError("the form had expired: send it again"))
    query, _ = criteria(form)
    export_format: Literal["csv", "jsonl"] = "csv" if form.get("format") == "csv" else "jsonl"
    try:
        body = compliance.RecordSearch.model_validate(query)
        return await compliance.export_records(body, who, request, format=export_format)
    except ValidationError as exc:
        return refused(request, session, ValueError(_invalid(exc)))
    except Problem as problem:
        return refused(request, session, ValueError(problem.error))


@router.get("/statement", response_class=HTMLResponse)
async def statement_form(request: Request) -> Response:
    entry = await admitted(request)
    if isinstance(entry, Response):
        return entry
    session, who = entry
    return shown(request, "console/statement.html", session, who, typed={}, statement=None, error=None)


@router.post("/statement", response_class=HTMLResponse)
async def statement(request: Request) -> Response:
    entry = await admitted(request)
    if isinstance(entry, Response):
        return entry
    session, who = entry
    form = await request.form()
    query, typed = criteria(form)
    made, error = None, None
    if not csrf_ok(request, session, form.get(CSRF_FIELD)):
        error = "This form had expired. Please send it again."
    else:
        try:
            body = compliance.StatementQuery.model_validate({"identity": query.get("identity") or {}})
            made = json.loads(await body_of(await compliance.person_statement(body, who, request, format="json")))
        except ValidationError as exc:
            error = _invalid(exc)
        except Problem as problem:
            error = f"{problem.field + ': ' if problem.field else ''}{problem.error}"
    return shown(
        request, "console/statement.html", session, who, status_code=400 if error else 200, typed=typed, statement=made, error=error
    )


# --- statistics and dead letters -----------------------------------------------------------------


async def _statistics(request: Request, who: Operator, since: str, until: str, export_format: Literal["json", "csv"] = "json") -> Response:
    moments = [datetime.fromisoformat(_moment(text)) if text else None for text in (since, until)]
    return await compliance.statistics(who, request, since=moments[0], until=moments[1], operator_id=None, format=export_format)


async def _months(request: Request, who: Operator) -> list[tuple[str, dict[str, Any]]]:
    async def month(label: str, start: datetime, end: datetime) -> tuple[str, dict[str, Any]]:
        answer = await compliance.statistics(who, request, since=start, until=end, operator_id=None, format="json")
        return label, json.loads(await body_of(answer))

    return list(await asyncio.gather(*(month(*bucket) for bucket in trends.months(gateway(request).clock()))))


@router.get("/statistics", response_class=HTMLResponse)
async def statistics(request: Request) -> Response:
    entry = await admitted(request)
    if isinstance(entry, Response):
        return entry
    session, who = entry
    since, until = request.query_params.get("from", "")[:10], request.query_params.get("to", "")[:10]
    figures, error = None, None
    try:
        figures = json.loads(await body_of(await _statistics(request, who, since, until)))
    except (ValueError, ValidationError) as exc:
        error = str(exc)
    except Problem as problem:
        error = problem.error
    charts = charts_of(figures) if figures else []
    if figures and not (since or until):  # over time: the statistics of each of the last months
        try:
            charts = trends.trend_charts(await _months(request, who)) + charts
        except Problem as problem:
            error = problem.error
    return shown(
        request,
        "console/statistics.html",
        session,
        who,
        status_code=400 if error else 200,
        **statistics_view(figures, charts, error, since, until),
    )


def statistics_view(
    figures: dict[str, Any] | None, charts: list[dict[str, Any]], error: str | None, since: str, until: str
) -> dict[str, Any]:
    """What the statistics page is rendered from."""
    return {
        "figures": figures,
        "charts": charts,
        "error": error,
        "since": since,
        "until": until,
        "forwarding": forwarding_of(figures),
    }


@router.get("/statistics.csv")
async def statistics_csv(request: Request) -> Response:
    session = sessions(request).read(request)
    try:
        who = await staff(request, session)
        return await _statistics(request, who, request.query_params.get("from", "")[:10], request.query_params.get("to", "")[:10], "csv")
    except SignedOut:
        return signed_out(request)
    except (PermissionMissingError, RateLimitedError) as exc:
        return refused(request, session, exc)
    except (Problem, ValueError) as exc:
        return refused(request, session, ValueError(str(getattr(exc, "error", exc))))


def charts_of(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The figures as Chart.js charts (each also shown as a table for those who cannot see it)."""
    charts: list[dict[str, Any]] = []
    for section, title in (("exclusions_started", "Exclusions started"), ("exclusions_active", "Exclusions active")):
        for dimension, name in (
            ("jurisdiction", "jurisdiction"),
            ("duration_kind", "duration kind"),
            ("birth_band", "year-of-birth band"),
            ("gender", "gender"),
        ):
            counts = figures.get(section, {}).get(f"by_{dimension}", {})
            charts.append(
                {
                    "id": f"{section}-{dimension}",
                    "title": f"{title} by {name}",
                    "type": "bar",
                    "axis": name.capitalize(),
                    "labels": list(counts),
                    "series": [{"label": title, "data": list(counts.values())}],
                }
            )
    days = figures.get("decisions_by_day", [])
    outcomes = sorted({key for day in days for key in day if key != "day"})
    charts.append(
        {
            "id": "decisions-by-day",
            "title": "Decisions per day by outcome",
            "type": "bar",
            "stacked": True,
            "axis": "Day",
            "labels": [day["day"] for day in days],
            "series": [{"label": outcome, "data": [day.get(outcome, 0) for day in days]} for outcome in outcomes],
        }
    )
    timing = {k: v for k, v in figures.get("time_to_enforcement_ms", {}).items() if k != "count"}
    charts.append(
        {
            "id": "time-to-enforcement",
            "title": "Time to enforcement (ms, percentiles)",
            "type": "bar",
            "axis": "Percentile",
            "labels": list(timing),
            "series": [{"label": "ms", "data": list(timing.values())}],
        }
    )
    return charts


# --- the forwarder's lag, as the statistics carry it (the scope all only) -------------------------

PENDING_WARNING_SECONDS = 3600  # a delivery waiting longer than this: the register is not taking them
SYNC_WARNING_SECONDS = 24 * 3600  # no successful sync for longer than this: the register's list here is old
BREAKER_WORDS = {"closed": "closed", "opened": "open", "open": "open", "half-opened": "half_open", "half-open": "half_open"}


def forwarding_of(figures: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``forwarding`` section in plain words: the period's deliveries and each register's newest
    status with its warnings. None when the statistics carry no such section (an operator's scope)."""
    section = (figures or {}).get("forwarding")
    if not isinstance(section, dict):
        return None
    deliveries = section.get("deliveries") or {}
    statuses = section.get("status_by_register") or {}
    return {
        "delivered": deliveries.get("delivered", 0),
        "failed": deliveries.get("failed", 0),
        "registers": [register_lag(str(register), status) for register, status in statuses.items() if isinstance(status, dict)],
    }


def register_lag(register: str, status: dict[str, Any]) -> dict[str, Any]:
    """One register's newest status: times as staff read them, ages in their largest unit (as of the
    report), and the warnings as (text key, values): pending too long, no recent sync, breaker not closed."""
    pending_age, sync_age = _seconds(status.get("oldest_pending_age_seconds")), _seconds(status.get("last_sync_age_seconds"))
    breaker = BREAKER_WORDS.get(str(status.get("breaker")), "unknown") if status.get("breaker") is not None else None
    warnings: list[tuple[str, dict[str, str]]] = []
    if pending_age is not None and pending_age > PENDING_WARNING_SECONDS:
        warnings.append(("forwarding_warn_pending", {"age": age(pending_age), "limit": f"{PENDING_WARNING_SECONDS // 3600} h"}))
    if sync_age is not None and sync_age > SYNC_WARNING_SECONDS:
        warnings.append(("forwarding_warn_sync", {"age": age(sync_age), "limit": f"{SYNC_WARNING_SECONDS // 3600} h"}))
    if breaker in ("open", "half_open"):
        warnings.append((f"forwarding_warn_breaker_{breaker}", {}))
    return {
        "register": None if register == "none" else register,  # none: a deployment that only imports
        "reported_at": _when(status.get("reported_at")),
        "stopping": bool(status.get("stopping")),
        "pending": status.get("pending"),
        "failed": status.get("failed"),
        "oldest_pending_at": _when(status.get("oldest_pending_at")),
        "oldest_pending_age": age(pending_age) if pending_age is not None else None,
        "last_delivered_at": _when(status.get("last_delivered_at")),
        "last_sync_at": _when(status.get("last_sync_at")),
        "last_sync_age": age(sync_age) if sync_age is not None else None,
        "breaker": breaker,
        "breaker_reported": status.get("breaker"),
        "warnings": warnings,
    }


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None


def _when(value: Any) -> str | None:
    """``when`` of a reported moment; None for none, and the text as it came if it is no moment."""
    if not value:
        return None
    try:
        return when(str(value))
    except ValueError:
        return str(value)


def age(seconds: float) -> str:
    """How long, rounded down: ``45 s``, ``3 min``, ``90 min``, ``2 h``, ``25 h``, ``3 d`` (hours from 2 h, days from 2 d)."""
    for size, unit, least in ((86400, "d", 2), (3600, "h", 2), (60, "min", 1)):
        if seconds >= size * least:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters(request: Request) -> Response:
    entry = await admitted(request)
    if isinstance(entry, Response):
        return entry
    session, who = entry
    figures, error = await answered(_statistics(request, who, "", ""))
    topics = figures.get("dead_letters_by_topic", {}) if figures is not None else None
    return shown(request, "console/dead_letters.html", session, who, topics=topics, error=error)


# --- the audit chain's verification status -------------------------------------------------------


@router.get("/chain", response_class=HTMLResponse)
async def audit_chain(request: Request) -> Response:
    entry = await admitted(request)
    if isinstance(entry, Response):
        return entry
    session, who = entry
    status, error = await answered(compliance.verification_status(who, request))
    return shown(request, "console/chain.html", session, who, status=status, error=error, when=when, span=span)


def when(text: str) -> str:
    """A stored moment (ISO 8601) as staff read it: ``2026-05-04 10:00:03 UTC``."""
    return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(seconds: float) -> str:
    """An interval in its largest whole unit: ``1 h``, ``30 min``, ``2 s``."""
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"
