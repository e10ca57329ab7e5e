"""The gateway's routes sit in the app's own router, matched in one pass (services/gateway/app.py)."""

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute

from services.gateway import chipout, gamstop, native
from services.gateway.app import create_app, mount


def test_every_route_of_the_gateway_is_in_the_app_router_itself():
    app = create_app()
    paths = {(route.path, method) for route in app.router.routes if isinstance(route, APIRoute) for method in route.methods}
    for router in (gamstop.router, chipout.router, native.router):
        assert {(route.path, method) for route in router.routes for method in route.methods} <= paths
    assert ("/", "POST") in paths
    assert not any(path.startswith("/_bench") for path, _ in paths), "the production gateway carries no bench route"


def test_the_hottest_routes_are_matched_first():
    app = create_app()
    api_paths = [route.path for route in app.router.routes if isinstance(route, APIRoute)]
    assert set(api_paths[:3]) == {"/", "/gamstop/v2", "/gamstop/v2/batch"}


def test_mount_refuses_a_router_whose_own_dependencies_it_would_drop():
    router = APIRouter(dependencies=[Depends(lambda: None)])

    @router.get("/x")
    async def x() -> None:
        return None

    with pytest.raises(TypeError, match="dependencies"):
        mount(FastAPI(), router)


def test_mount_refuses_a_router_that_includes_another():
    outer, inner = APIRouter(), APIRouter()

    @inner.get("/x")
    async def x() -> None:
        return None

    outer.include_router(inner)
    with pytest.raises(TypeError, match="plain API routes"):
        mount(FastAPI(), outer)
