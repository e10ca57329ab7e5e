"""The console's document-review queue (``/console/reviews``, register staff only: ``REVIEW``): each
identity document waiting for a review, the document itself (opened with the deployment's key, served
inline with no-store and a sandboxing policy), and the decision (approve, or reject with the reason the
person is told), sent to verification as a command."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.gateway.access import Permission
from services.gateway.web import reviews
from services.gateway.web.console_pages import admitted, refused, sessions, shown
from services.gateway.web.sessions import CSRF_FIELD, csrf_ok

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/reviews", response_class=HTMLResponse)
async def review_queue(request: Request) -> Response:
    entry = await admitted(request, Permission.REVIEW)
    if isinstance(entry, Response):
        return entry
    session, who = entry
    flash = session.pop("flash", None)
    return shown(request, "console/reviews.html", session, who, queue=await reviews.waiting(request.app.state.db), flash=flash)


@router.get("/reviews/{document_id}", response_class=HTMLResponse)
async def review(request: Request, document_id: str) -> Response:
    entry = await admitted(request, Permission.REVIEW)
    if isinstance(entry, Response):
        return entry
    session, who = entry
    found = await reviews.document(request.app.state.db, request.app.state.sealer, document_id[:200])
    if found is None:
        return refused(request, session, LookupError("no such document"))
    return shown(request, "console/review.html", session, who, document=found[0], error=None, note="")


@router.get("/documents/{document_id}")
async def document_bytes(request: Request, document_id: str) -> Response:
    entry = await admitted(request, Permission.REVIEW)
    if isinstance(entry, Response):
        return entry
    _session, _ = entry
    found = await reviews.document(request.app.state.db, request.app.state.sealer, document_id[:200])
    if found is None:
        return Response(status_code=404)
    stored, data = found
    headers = {
        "Content-Disposition": f'inline; filename="document-{stored["_id"]}"',
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox",
    }
    return Response(data, media_type=stored["content_type"], headers=headers)


@router.post("/reviews/{document_id}", response_class=HTMLResponse)
async def review_decided(request: Request, document_id: str) -> Response:
    entry = await admitted(request, Permission.REVIEW)
    if isinstance(entry, Response):
        return entry
    session, who = entry
    form = await request.form()
    found = await reviews.document(request.app.state.db, request.app.state.sealer, document_id[:200])
    if found is None:
        return refused(request, session, LookupError("no such document"))
    decision, note = str(form.get("decision", "")), str(form.get("note", "")).strip()[:2000]
    error = None
    if not csrf_ok(request, session, form.get(CSRF_FIELD)):
        error = "This form had expired. Please send it again."
    elif decision not in ("approve", "reject"):
        error = "Choose approve or reject."
    elif decision == "reject" and not note:
        error = "Say why the document is rejected: the person is told."
    if error:
        return shown(request, "console/review.html", session, who, status_code=400, document=found[0], error=error, note=note)
    state = await reviews.decide(
        request.app.state.publish, request.app.state.db, who, found[0], approved=decision == "approve", note=note or None
    )
    session["flash"] = f"Document {document_id} {'approved' if decision == 'approve' else 'rejected'}: the verification is now {state}."
    response = RedirectResponse("/console/reviews", status_code=303)
    sessions(request).write(response, session)
    return response
