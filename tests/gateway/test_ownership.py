"""The gateway owns its data: no module of it names another service's collection or imports another service.

What it answers comes from read models it keeps itself, fed by the lifecycle and verification topics.
"""

import ast
from pathlib import Path

import pytest

from services.registration.repository import INDEXES as REGISTRATION_INDEXES
from services.verification.repository import INDEXES as VERIFICATION_INDEXES

GATEWAY = Path(__file__).resolve().parents[2] / "services" / "gateway"
FOREIGN_COLLECTIONS = (
    set(REGISTRATION_INDEXES) | set(VERIFICATION_INDEXES) | {"exclusions", "verifications", "verification_submissions", "documents"}
)
FOREIGN_PACKAGES = (
    "services.registration",
    "services.verification",
    "services.blocking",
    "services.audit",
    "services.notification",
    "services.forwarder",
)


def modules() -> list[Path]:
    return sorted(GATEWAY.glob("*.py"))


def test_there_are_gateway_modules_to_look_at():
    assert {"portal.py", "repository.py", "context.py", "native.py"} <= {path.name for path in modules()}


@pytest.mark.parametrize("path", modules(), ids=lambda path: path.name)
def test_a_gateway_module_imports_no_other_service(path: Path):
    tree = ast.parse(path.read_text())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert [name for name in imported if name.startswith(FOREIGN_PACKAGES)] == []


@pytest.mark.parametrize("path", modules(), ids=lambda path: path.name)
def test_a_gateway_module_names_no_collection_of_another_service(path: Path):
    tree = ast.parse(path.read_text())
    # A collection is named by a string: ``database["exclusions"]``, ``get_collection("exclusions")``.
    named = [
        node.slice.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)
    ]
    named += [
        argument.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get_collection"
        for argument in node.args
        if isinstance(argument, ast.Constant)
    ]
    assert sorted(set(named) & FOREIGN_COLLECTIONS) == []
