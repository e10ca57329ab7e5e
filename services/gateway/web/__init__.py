"""The gateway's pages for people: the landing page (``GET /``), the self-exclusion portal
(``/portal``) and the compliance console (``/console``), server-rendered from Jinja2 templates, with
their style sheet and scripts under ``/static`` (Chart.js copied there from npm by ``make install``;
nothing is loaded from the internet)."""

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from services.gateway.web import console_pages, notice_links, portal_pages
from services.gateway.web.rendering import HERE, page

landing = APIRouter(include_in_schema=False)


@landing.get("/", response_class=HTMLResponse)
async def home(request: Request) -> HTMLResponse:
    """The landing page (``POST /`` stays the GAMSTOP check)."""
    return page(request, "landing.html")


def install(app: FastAPI) -> None:
    """The pages' routes (into the app's own router, as ``app.mount`` puts the APIs': matched in one
    pass, after the APIs') and their static files."""
    for router in (landing, portal_pages.router, notice_links.router, console_pages.router):
        app.router.routes.extend(router.routes)
    app.mount("/static", StaticFiles(directory=HERE / "static", check_dir=False), name="static")
