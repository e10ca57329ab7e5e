"""The gateway's pages for people: the landing page (``GET /``), the self-exclusion portal
(``/portal``) and the compliance console (``/console``), server-rendered from Jinja2 templates, with
their style sheet and scripts under ``/static`` (Chart.js copied there from npm by ``make install``;
nothing is loaded from the internet)."""

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from services.gateway.web import notice_links, portal_pages
from services.gateway.web.rendering import HERE, page

landing = APIRouter(include_in_schema=False)


@landing.get("/", response_class=HTMLResponse)
async def home(request: Request) -> HTMLResponse:
    """The landing page (``POST /`` stays the GAMSTOP check)."""
    return page(request, "landing.html")


def install(app: FastAPI) -> None:
    """The pages' routes and their static files, into the gateway's app."""
    app.include_router(landing)
    app.include_router(portal_pages.router)
    app.include_router(notice_links.router)
    app.mount("/static", StaticFiles(directory=HERE / "static", check_dir=False), name="static")
