"""``POST /v1/notices``: an operator asks for the notice link to redirect an excluded customer to.

The operator's ``check`` key and the person's identity, as for a check; the answer is a link to
``/portal/notice`` whose sealed, expiring token carries the end date (or "until further notice") and
the jurisdiction, never who the person is.
"""

from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.gateway.context import gateway, lookup_current
from services.gateway.edge import note
from services.gateway.native import KEY_RESPONSES, UNAVAILABLE, Checker, _personal
from services.gateway.schemas import PersonQuery
from services.gateway.web.notices import LINK_LIFETIME, Notice, notice_token

router = APIRouter(prefix="/v1")


@router.post(
    "/notices",
    tags=["people"],
    summary="The self-exclusion notice link to redirect an excluded customer to (a sealed, expiring token; no identity in it)",
    responses={**KEY_RESPONSES, **UNAVAILABLE, 404: {"description": "the person is not excluded now"}},
)
async def notice_link(body: PersonQuery, operator: Checker, request: Request) -> JSONResponse:
    the_gateway = gateway(request)
    identity = _personal(body.identity)
    lookup_current(request, the_gateway)
    now = the_gateway.clock()
    in_force = [s for s in await the_gateway.summaries_of(identity) if s.in_force(now)]
    note(request).outcome = "excluded" if in_force else "not_excluded"
    if not in_force:
        return JSONResponse({"error": "this person is not excluded now", "field": "identity"}, status_code=404)
    ends = [s.lift_effective_at or s.ends_at for s in in_force]
    until: datetime | None = None if any(end is None for end in ends) else max(e for e in ends if e is not None)
    jurisdiction = in_force[0].jurisdiction
    token = notice_token(request.app.state.sealer, Notice(until.date() if until else None, jurisdiction), now)
    return JSONResponse(
        {
            "url": f"{request.base_url}portal/notice?t={token}",
            "until": until.date().isoformat() if until else None,
            "expires_at": (now + LINK_LIFETIME).isoformat(),
        }
    )
