"""The gateway's pages for people: the landing page (``GET /``), the self-exclusion portal
(``/portal``) and the compliance console (``/console``), server-rendered from Jinja2 templates, with
their style sheet and scripts under ``/static`` (Chart.js copied there from npm by ``make install``;
nothing is loaded from the internet)."""

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from services.gateway.web import console_pages, console_reviews, notice_links, portal_pages, portal_status
from services.gateway.web.rendering import HERE, page

landing = APIRouter(include_in_schema=False)


@landing.get("/", response_class=HTMLResponse)
async def home(request: Request) -> HTMLResponse:
    """The landing page (``POST /`` stays the GAMSTOP check)."""
    return page(request, "landing.html")


def install(app: FastAPI) -> None:
    """The pages' routes (into the app's own router, as ``app.mount`` puts the APIs': matched in one
    pass, after the APIs') and their static files."""
    pages = (portal_pages, portal_status, console_pages, console_reviews)
    for router in (landing, notice_links.router, *(module.router for module in pages)):
        app.router.routes.extend(router.routes)
    app.mount("/static", StaticFiles(directory=HERE / "static", check_dir=False), name="static")
