"""The self-exclusion portal's pages (``/portal``): the panic button, the full request, the code, the
confirmation, the status page (extend, ask to lift), the document upload and the operators' notice.

Each page is a form that works without JavaScript. The writes are the JSON portal's own
(``services.gateway.portal``: the same checks, the same commands on Kafka) and the lift's
(``services.gateway.lifts``); the reads are the gateway's views. What the person gave is kept only
in their sealed session cookie (``sessions``), never on the server.
"""

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pymongo.errors import PyMongoError

from services.gateway import portal
from services.gateway.context import gateway
from services.gateway.problems import Problem
from services.gateway.repository import MongoCommandEffects, MongoViews
from services.gateway.web import forms
from services.gateway.web.notices import read_notice
from services.gateway.web.rendering import page
from services.gateway.web.sessions import CSRF_FIELD, Sessions, csrf_ok
from services.gateway.web.texts import language_of
from shared.events import FINAL_STATES
from shared.policies import Policy

router = APIRouter(prefix="/portal", include_in_schema=False)
SESSION_SECONDS = 30 * 60
WAIT_SECONDS = 5.0
UNAVAILABLE = (TimeoutError, PyMongoError, KafkaError, ConnectionError)
ENDED = {s.value for s in FINAL_STATES}


def sessions(request: Request) -> Sessions:
    return Sessions(request.app.state.sealer, "selfex_portal", SESSION_SECONDS)


def now_of(request: Request) -> datetime:
    return gateway(request).clock()


def shown(request: Request, template: str, session: dict[str, Any], *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page with the session's CSRF token in its forms, the session written back."""
    response = page(
        request,
        template,
        status_code=status_code,
        csrf=session[CSRF_FIELD],
        now=now_of(request),
        session_contact=session.get("contact"),
        **context,
    )
    sessions(request).write(response, session)
    return response


def redirect(request: Request, to: str, session: dict[str, Any]) -> RedirectResponse:
    response = RedirectResponse(to, status_code=303)
    sessions(request).write(response, session)
    return response


def duration_words(choice: forms.DurationChoice, t, day, now: datetime) -> tuple[str, str]:
    """A duration's name and what happens at its end, in the page's words."""
    terms = choice.terms
    label = t(f"duration_label_{terms.label}") if terms.label else ""
    if not label or label.startswith("duration_label_"):
        amount, unit = terms.duration.amount, terms.duration.unit
        one = {(1, "d"): "duration_day", (1, "m"): "duration_month"}.get((amount, unit))
        label = t(one or ("duration_days" if unit == "d" else "duration_months"), n=amount)
    if choice.on_request:
        words = t("duration_on_request", date=day(choice.minimum_until(now)))
    else:
        words = t("duration_ends", date=day(choice.ends_at(now)))
        if terms.minimum is not None:
            words += " " + t("duration_lift_after", date=day(choice.minimum_until(now)))
    if terms.panic:
        words = t("duration_panic") + " " + words
    return label, words


# --- the first page and the panic button ---------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def start(request: Request) -> Response:
    session = sessions(request).read(request)
    panic = forms.panic_policy(request.app.state.policies)
    return shown(request, "portal/start.html", session, panic=panic, values={}, errors={})


@router.post("/panic", response_class=HTMLResponse)
async def panic_button(request: Request) -> Response:
    session = sessions(request).read(request)
    form = await request.form()
    panic = forms.panic_policy(request.app.state.policies)
    if panic is None:
        return RedirectResponse("/portal/request", status_code=303)
    policy, duration = panic
    checked = forms.check_panic(dict(form), policy)
    if not csrf_ok(request, session, form.get(CSRF_FIELD)):
        checked.errors["form"] = "error_csrf"
    if checked.errors:
        return shown(request, "portal/start.html", session, status_code=400, panic=panic, values=checked.values, errors=checked.errors)
    request_form = portal.PortalExclusionRequest(
        **checked.clean, duration=duration, jurisdiction=policy.jurisdiction, locale=locale(request)
    )
    failed = await requested(request, session, request_form)
    if failed is not None:
        field = "contact" if failed.get("field") in {"email", "mobile", "identity", "verify_by"} else "form"
        errors = {field: failed["error"]}
        return shown(request, "portal/start.html", session, status_code=400, panic=panic, values=checked.values, errors=errors)
    return redirect(request, "/portal/code", session)


# --- the full request ------------------------------------------------------------------------------


def _policy(request: Request, jurisdiction: str | None) -> Policy:
    policies = request.app.state.policies
    chosen = (jurisdiction or "").upper()
    if chosen in policies:
        return policies[chosen]
    return policies["SE"] if "SE" in policies else policies[sorted(policies)[0]]


def _request_page(request: Request, session: dict[str, Any], policy: Policy, checked: forms.Checked, status_code: int = 200) -> Response:
    now = now_of(request)
    return shown(
        request,
        "portal/request.html",
        session,
        status_code=status_code,
        policy=policy,
        policies=sorted(request.app.state.policies.values(), key=lambda p: p.name),
        durations=forms.duration_choices(policy, now),
        duration_words=duration_words,
        identity_fields=forms.identity_fields(policy),
        games=forms.GAME_CATEGORIES,
        values=checked.values,
        errors=checked.errors,
    )


@router.get("/request", response_class=HTMLResponse)
async def request_form(request: Request, jurisdiction: str | None = None) -> Response:
    session = sessions(request).read(request)
    policy = _policy(request, jurisdiction)
    return _request_page(request, session, policy, forms.Checked({"scope": list(policy.scopes), "games": "all", "game": []}))


@router.post("/request", response_class=HTMLResponse)
async def request_sent(request: Request) -> Response:
    session = sessions(request).read(request)
    form = await request.form()
    policy = _policy(request, str(form.get("jurisdiction", "")))
    values = {key: form.get(key) for key in form} | {"scope": form.getlist("scope"), "game": form.getlist("game")}
    checked = forms.check_request(values, policy, now_of(request))
    if not csrf_ok(request, session, form.get(CSRF_FIELD)):
        checked.errors["form"] = "error_csrf"
    if checked.errors:
        return _request_page(request, session, policy, checked, status_code=400)
    request_form = portal.PortalExclusionRequest(**checked.clean, jurisdiction=policy.jurisdiction, locale=locale(request))
    failed = await requested(request, session, request_form)
    if failed is not None:
        field = failed.get("field") or "form"
        checked.errors[field if field in checked.values or field in {"identity", "verify_by"} else "form"] = failed["error"]
        return _request_page(request, session, policy, checked, status_code=400)
    return redirect(request, "/portal/document" if session.get("verification") == "document" else "/portal/code", session)


async def requested(request: Request, session: dict[str, Any], form: portal.PortalExclusionRequest) -> dict[str, Any] | None:
    """The request sent as the JSON portal sends it; the session then knows it. A refusal's body, or None."""
    try:
        answer = await portal.exclusion_requested(request.app.state, form)
    except Problem as problem:
        return {"error": _problem_key(problem), "field": problem.field}
    except UNAVAILABLE:
        return {"error": "error_unavailable", "field": None}
    body = json.loads(bytes(answer.body))
    identity = form.identity().model_dump(mode="json", exclude_none=True)
    session.update(
        exclusion_id=body.get("exclusion_id"),
        request_id=body.get("request_id"),
        verification=body.get("verification") or "code",
        identity=identity,
        jurisdiction=form.jurisdiction,
        verify_by=form.verify_by,
        contact=forms.masked(str(identity.get("email") if form.verify_by == "email" else identity.get("mobile") or "")),
        verified=False,
    )
    return None


def _problem_key(problem: Problem) -> str:
    keys = {"national_id": "error_national_id", "mobile": "error_mobile", "email": "error_email", "date_of_birth": "error_date_of_birth"}
    keys |= {"identity": "error_identity", "verify_by": "error_contact", "duration": "error_duration", "scope": "error_scope"}
    return keys.get(problem.field or "", "error_identity" if problem.status == 400 else "error_unavailable")


def locale(request: Request) -> str:
    return language_of(request)


# --- the code -----------------------------------------------------------------------------------


async def _exclusion_id(request: Request, session: dict[str, Any]) -> str | None:
    """The session's request's exclusion; a request still being processed is looked up once more."""
    if session.get("exclusion_id"):
        return session["exclusion_id"]
    if session.get("request_id"):
        effect = await MongoCommandEffects(request.app.state.db).get(session["request_id"])
        if effect is not None:
            session["exclusion_id"] = effect["exclusion_id"]
            return effect["exclusion_id"]
    return None


@router.get("/code", response_class=HTMLResponse)
async def code_form(request: Request) -> Response:
    session = sessions(request).read(request)
    if not session.get("identity"):
        return RedirectResponse("/portal", status_code=303)
    return shown(request, "portal/code.html", session, errors={}, values={}, lift=False, resent=request.query_params.get("resent"))


@router.post("/code", response_class=HTMLResponse)
async def code_sent(request: Request) -> Response:
    session = sessions(request).read(request)
    form = await request.form()
    code = str(form.get("code", "")).strip()
    errors = code_errors(request, session, form, code)
    exclusion_id = await _exclusion_id(request, session) if not errors else None
    if not errors and exclusion_id is None:
        errors["code"] = "processing"
    if not errors:
        try:
            answer = json.loads(bytes((await portal.code_submitted(request.app.state, str(exclusion_id), code)).body))
        except Problem as problem:
            answer = {"status": "failed", "reason": problem.error}
        except UNAVAILABLE:
            answer = {"status": "unavailable"}
        if answer.get("status") in ("verified", "already_verified"):
            session["verified"] = True
            return redirect(request, "/portal/done", session)
        errors["code"] = code_error(answer)
    return shown(request, "portal/code.html", session, status_code=400, errors=errors, values={"code": code[:12]}, lift=False)


def code_errors(request: Request, session: dict[str, Any], form, code: str) -> dict[str, Any]:
    if not csrf_ok(request, session, form.get(CSRF_FIELD)):
        return {"form": "error_csrf"}
    if not portal.CODE.fullmatch(code):
        return {"code": "error_code"}
    return {}


def code_error(answer: dict[str, Any]) -> Any:
    status = answer.get("status")
    if status == "wrong_code":
        return ("error_code_wrong", {"left": answer.get("attempts_left", 0)})
    if status == "expired":
        return "error_code_expired"
    if status == "already_used":
        return "error_code_used"
    if status == "unavailable":
        return "error_unavailable"
    return ("error_failed", {"reason": answer.get("reason") or status})


@router.post("/code/resend", response_class=HTMLResponse)
async def code_resend(request: Request) -> Response:
    session = sessions(request).read(request)
    form = await request.form()
    exclusion_id = await _exclusion_id(request, session)
    if csrf_ok(request, session, form.get(CSRF_FIELD)) and exclusion_id:
        try:
            await portal.resend_code(str(exclusion_id), request)  # refusals come back as answers, not raised
        except UNAVAILABLE:
            pass  # the code page says what to do either way
    return redirect(request, "/portal/code?resent=1", session)


# --- the confirmation and the status page ---------------------------------------------------------


async def settled_view(request: Request, exclusion_id: str) -> dict[str, Any] | None:
    """The exclusion once its code has taken it past pending (read your own write, bounded)."""
    views = MongoViews(request.app.state.db)
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        view = await views.get(exclusion_id)
        if (view is not None and view.get("state") != "pending_verification") or time.monotonic() >= deadline:
            return view
        await asyncio.sleep(0.05)


@router.get("/done", response_class=HTMLResponse)
async def done(request: Request) -> Response:
    session = sessions(request).read(request)
    if not session.get("verified") or not session.get("exclusion_id"):
        return RedirectResponse("/portal", status_code=303)
    view = await settled_view(request, session["exclusion_id"])
    return shown(request, "portal/done.html", session, view=view)


# --- the document ------------------------------------------------------------------------------


@router.get("/document", response_class=HTMLResponse)
async def document_form(request: Request) -> Response:
    session = sessions(request).read(request)
    if not session.get("identity"):
        return RedirectResponse("/portal", status_code=303)
    return shown(request, "portal/document.html", session, errors={}, sent=False)


@router.post("/document", response_class=HTMLResponse)
async def document_sent(request: Request) -> Response:
    session = sessions(request).read(request)
    errors: dict[str, Any] = {}
    try:
        form = await request.form(max_files=1, max_fields=5)
    except Exception:  # noqa: BLE001 — any parse failure of the multipart body is the sender's
        return shown(request, "portal/document.html", session, status_code=400, errors={"file": "error_file"}, sent=False)
    exclusion_id = await _exclusion_id(request, session)
    upload = form.get("file")
    if not csrf_ok(request, session, form.get(CSRF_FIELD)):
        errors["form"] = "error_csrf"
    elif exclusion_id is None:
        errors["form"] = "processing"
    elif upload is None or isinstance(upload, str):
        errors["file"] = "error_file"
    else:
        data = await upload.read(portal.MAX_DOCUMENT_BYTES + 1)
        try:
            if not data or len(data) > portal.MAX_DOCUMENT_BYTES:
                raise Problem(400, "file", "file")
            answer = await portal.document_submitted(request.app.state, uuid.UUID(exclusion_id), data)
            if answer.status_code >= 400:
                errors["file"] = ("error_failed", {"reason": json.loads(bytes(answer.body)).get("reason")})
        except Problem as problem:
            errors["file"] = "error_file" if problem.field == "file" else ("error_failed", {"reason": problem.error})
        except UNAVAILABLE:
            errors["form"] = "error_unavailable"
    return shown(request, "portal/document.html", session, status_code=400 if errors else 200, errors=errors, sent=not errors)


# --- the notice operators link to ---------------------------------------------------------------------


@router.get("/notice", response_class=HTMLResponse)
async def notice(request: Request, t: str = "") -> Response:
    found = read_notice(request.app.state.sealer, t[:2000], datetime.now(UTC))
    return page(request, "portal/notice.html", status_code=200 if found else 410, notice=found)
