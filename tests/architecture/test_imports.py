"""The import contracts in pyproject.toml hold on this tree, and each one breaks when one forbidden
import is added back: a contract that cannot fail keeps nothing."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("selfex", "bench", "services", "shared")
CONTRACTS = {c["id"]: c["name"] for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]}

# contract id -> (file, the forbidden import added to it)
FORBIDDEN = {
    "services-independent": ("services/audit/handlers.py", "from services.blocking import domain as _other_service"),
    "shared-is-the-ground": ("shared/topics.py", "from services.audit import repository as _a_service"),
    "services-below-the-root": ("services/audit/app.py", "from selfex import stack as _the_composition_root"),
    "domain-without-io": ("services/registration/domain.py", "import pymongo as _a_store_driver"),
}


def copy_of_the_tree(destination: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, destination / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", destination / "pyproject.toml")
    return destination


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` in ``tree``: the copy's packages, found before the installed (editable) ones."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "500", "NO_COLOR": "1"}
    command = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"]
    return subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def outcomes(output: str) -> dict[str, str]:
    """Each contract's name -> KEPT or BROKEN, as lint-imports reports them."""
    found = {}
    for line in output.splitlines():
        for name in CONTRACTS.values():
            verdict = line.removeprefix(name).split()
            if line.startswith(name) and verdict and verdict[0] in ("KEPT", "BROKEN"):
                found.setdefault(name, verdict[0])
    return found


def test_every_contract_has_a_forbidden_import_that_must_break_it():
    assert set(FORBIDDEN) == set(CONTRACTS)


def test_the_tree_as_it_is_keeps_every_contract(tmp_path):
    result = lint_imports(copy_of_the_tree(tmp_path))

    assert result.returncode == 0, result.stdout + result.stderr
    assert outcomes(result.stdout) == dict.fromkeys(CONTRACTS.values(), "KEPT"), result.stdout


@pytest.mark.parametrize("contract", sorted(FORBIDDEN))
def test_one_forbidden_import_added_back_breaks_its_contract(tmp_path, contract):
    tree = copy_of_the_tree(tmp_path)
    path, line = FORBIDDEN[contract]
    with open(tree / path, "a") as module:
        module.write(f"\n{line}  # added by tests/architecture/test_imports.py\n")

    result = lint_imports(tree)

    assert result.returncode != 0, result.stdout + result.stderr
    assert outcomes(result.stdout)[CONTRACTS[contract]] == "BROKEN", result.stdout
