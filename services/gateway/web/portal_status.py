"""The portal's status page (``/portal/status``), after the person's code: their exclusions with their
dates and history, a longer duration (never a shorter one: only longer ones are offered, and
registration keeps the later end anyway), and a lift request, which a code to the person's contact on
file completes (``services.gateway.lifts``) before the policy decides."""

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.gateway import lifts, portal
from services.gateway.context import gateway
from services.gateway.repository import MongoViews
from services.gateway.web import forms
from services.gateway.web.portal_pages import (
    ENDED,
    UNAVAILABLE,
    code_error,
    code_errors,
    duration_words,
    locale,
    now_of,
    redirect,
    requested,
    sessions,
    settled_view,
    shown,
)
from services.gateway.web.sessions import CSRF_FIELD, csrf_ok
from shared.policies import End, Policy

router = APIRouter(prefix="/portal", include_in_schema=False)


async def persons_exclusions(request: Request, view: dict[str, Any]) -> list[dict[str, Any]]:
    """Every exclusion of the view's person the gateway knows, by the identifiers they share, oldest first."""
    the_gateway = gateway(request)
    found = await the_gateway.lookup.summaries_by_identifier(view.get("identifiers") or [])
    ids = {str(s.exclusion_id) for summaries in found.values() for s in summaries} | {view["_id"]}
    return await the_gateway.views.many(ids)


@router.get("/status", response_class=HTMLResponse)
async def status(request: Request) -> Response:
    session = sessions(request).read(request)
    if not session.get("verified") or not session.get("exclusion_id"):
        return RedirectResponse("/portal", status_code=303)
    view = await settled_view(request, session["exclusion_id"])
    exclusions = await persons_exclusions(request, view) if view else []
    now = now_of(request)
    policies = request.app.state.policies
    running = [e for e in exclusions if e.get("state") not in ENDED]
    current = running[-1] if running else None
    policy = policies.get(current["jurisdiction"]) if current else None
    longer = forms.longer_choices(policy, now, current) if current and policy else []
    liftable = bool(policy and current and (_ends_on_request(policy, current) or policy.lift_allowed_early()))
    flash = session.pop("flash", None)
    return shown(
        request,
        "portal/status.html",
        session,
        exclusions=exclusions,
        current=current,
        policy=policy,
        longer=longer,
        liftable=liftable,
        duration_words=duration_words,
        flash=flash,
        errors=session.pop("errors", {}),
    )


def _ends_on_request(policy: Policy, exclusion: dict[str, Any]) -> bool:
    try:
        return policy.terms(str(exclusion.get("duration"))).end is End.ON_REQUEST
    except ValueError:
        return exclusion.get("ends_at") is None


@router.post("/status/extend", response_class=HTMLResponse)
async def extend(request: Request) -> Response:
    session = sessions(request).read(request)
    form = await request.form()
    if not session.get("verified") or not session.get("identity"):
        return RedirectResponse("/portal", status_code=303)
    if not csrf_ok(request, session, form.get(CSRF_FIELD)):
        session["errors"] = {"extend": "error_csrf"}
        return redirect(request, "/portal/status", session)
    view = await MongoViews(request.app.state.db).get(session["exclusion_id"])
    policy = request.app.state.policies.get(view["jurisdiction"]) if view else None
    offered = {c.value for c in forms.longer_choices(policy, now_of(request), view)} if view and policy else set()
    duration = str(form.get("duration", ""))
    if duration not in offered:
        session["errors"] = {"extend": "error_extend"}
        return redirect(request, "/portal/status", session)
    exclusion_id = session["exclusion_id"]
    extension = portal.PortalExclusionRequest(
        **session["identity"],
        duration=duration,
        jurisdiction=view["jurisdiction"],  # type: ignore[index]
        verify_by=session.get("verify_by"),
        locale=locale(request),
        scope=view.get("scope"),  # type: ignore[union-attr]
    )
    failed = await requested(request, session, extension)
    session["verified"] = True
    if failed is not None:
        session["errors"] = {"extend": failed["error"]}
    else:
        session["flash"] = ["extended", {}]
        session["exclusion_id"] = session.get("exclusion_id") or exclusion_id
    return redirect(request, "/portal/status", session)


@router.post("/status/lift", response_class=HTMLResponse)
async def lift(request: Request) -> Response:
    session = sessions(request).read(request)
    form = await request.form()
    if not session.get("verified") or not session.get("exclusion_id"):
        return RedirectResponse("/portal", status_code=303)
    if not csrf_ok(request, session, form.get(CSRF_FIELD)):
        session["errors"] = {"lift": "error_csrf"}
        return redirect(request, "/portal/status", session)
    view = await MongoViews(request.app.state.db).get(session["exclusion_id"])
    if view is None or view.get("state") in ENDED:
        return redirect(request, "/portal/status", session)
    try:
        answer = await lifts.start(
            gateway(request), request.app.state.db, view, operator_id=None, verify_by=session.get("verify_by"), locale=locale(request)
        )
    except UNAVAILABLE:
        session["errors"] = {"lift": "error_unavailable"}
        return redirect(request, "/portal/status", session)
    if answer.status >= 400:
        session["errors"] = {"lift": ("error_failed", {"reason": answer.body.get("reason") or answer.body.get("error")})}
        return redirect(request, "/portal/status", session)
    session["lift_id"] = answer.body["lift_id"]
    return redirect(request, "/portal/lift", session)


@router.get("/lift", response_class=HTMLResponse)
async def lift_code_form(request: Request) -> Response:
    session = sessions(request).read(request)
    if not session.get("lift_id"):
        return RedirectResponse("/portal/status", status_code=303)
    return shown(request, "portal/code.html", session, errors={}, values={}, lift=True)


@router.post("/lift", response_class=HTMLResponse)
async def lift_code_sent(request: Request) -> Response:
    session = sessions(request).read(request)
    form = await request.form()
    code = str(form.get("code", "")).strip()
    if not session.get("lift_id"):
        return RedirectResponse("/portal/status", status_code=303)
    errors = code_errors(request, session, form, code)
    if not errors:
        try:
            answer = await lifts.complete(
                gateway(request), request.app.state.db, request.app.state.sealer, uuid.UUID(session["lift_id"]), code
            )
        except UNAVAILABLE:
            answer = lifts.Answer(503, {"status": "unavailable"})
        body = answer.body
        if body.get("status") == "refused":
            session["flash"] = ["lift_refused", {"reason": body.get("reason")}]
        elif body.get("status") == "lift_requested":
            session["flash"] = ["lift_accepted", {"date": (body.get("exclusion") or {}).get("lift_effective_at") or ""}]
        elif body.get("status") == "lifted":
            session["flash"] = ["lift_done", {}]
        elif answer.status < 400 and body.get("status") in ("verified", "processing"):
            session["flash"] = ["processing", {}]
        else:
            errors["code"] = code_error(body)
        if not errors:
            session.pop("lift_id", None)
            return redirect(request, "/portal/status", session)
    return shown(request, "portal/code.html", session, status_code=400, errors=errors, values={"code": code[:12]}, lift=True)
