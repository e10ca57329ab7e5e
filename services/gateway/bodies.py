"""Reading JSON request bodies safely: a nesting-depth limit checked before parsing, strict JSON.

The standard library's parser recurses once per level of nesting, so a small body nested thousands
deep (``[[[[…``, well under the size limit) would exhaust the stack. A cheap pre-scan refuses it
first: when the body holds fewer brackets than the limit it cannot be too deep (two ``bytes.count``
calls); otherwise its strings are cut out and the brackets counted. ``NaN`` and ``Infinity``, which
the standard library accepts, are not JSON and are refused too.
"""

import json
import re
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute

from services.gateway.problems import Problem

MAX_JSON_DEPTH = 32  # far deeper than any body we take (a native check is 3 levels)
_STRINGS = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests arrays and objects deeper than ``limit`` (malformed text may pass)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for bracket in _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS):
        if bracket in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def json_value(raw: bytes, *, field: str = "body") -> Any:
    """The body's JSON value, or a 400 naming what is wrong with it."""
    if too_deep(raw):
        raise Problem(400, f"the body nests arrays and objects more than {MAX_JSON_DEPTH} deep", field)
    try:
        return json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Problem(400, "the body is not valid JSON", field) from None


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return content_type == "application/json" or content_type.endswith("+json")


class JsonCheckedRoute(APIRoute):
    """A route whose JSON body is checked for depth before FastAPI parses it (FastAPI would answer a
    ``RecursionError`` with an anonymous 400)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def checked(request: Request):
            if request.method in ("POST", "PUT", "PATCH") and _is_json(request) and too_deep(await request.body()):
                raise Problem(400, f"the body nests arrays and objects more than {MAX_JSON_DEPTH} deep", "body")
            return await handler(request)

        return checked
