"""The stack as ``make run`` starts it (``selfex up --demo-operator`` on the embedded broker and store,
with its SMTP sink keeping every message), one per test module, and Debian's Chromium through
Playwright: a fresh browser context per test, whose last page is saved as a screenshot under the
test's own output folder."""

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from pymongo import MongoClient
from pymongo.database import Database

from shared.infra import free_port
from shared.settings import Settings
from tests.e2e.conftest import selfex_command, stop, wait_for_health
from tests.web.browsing import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.e2e
# A page's answer waits on the broker (a code, a read of one's own write): give a loaded machine time.
expect.set_options(timeout=15_000)


@dataclass
class WebStack:
    base_url: str
    mail: Path  # where the stack's SMTP sink keeps each message
    env: dict[str, str]  # what reaches the stack's servers, for the selfex command
    log: Path

    def demo_key(self) -> str:
        """The demo operator's key ``make run`` prints (roles operator, operator-compliance)."""
        return (self.log.parent / ".selfex" / "demo-operator.key").read_text().strip()

    def staff_key(self, name: str, role: str) -> str:
        """A register-staff or regulator key, as ``selfex staff add`` issues it."""
        result = subprocess.run(
            selfex_command() + ["staff", "add", name, "--role", role, "--quiet"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout.strip().splitlines()[-1]

    @contextmanager
    def store(self, service: str) -> Iterator[Database]:
        """A service's database in the stack's store, as the stack names it (no SELFEX_MONGO_DB: the default)."""
        client: MongoClient = MongoClient(self.env["SELFEX_MONGO_URI"], serverSelectionTimeoutMS=10_000)
        try:
            yield client[Settings.model_construct().database_for(service)]
        finally:
            client.close()


@pytest.fixture(scope="module")
def web_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebStack]:
    folder = tmp_path_factory.mktemp("stack")
    kafka_port, mongo_port, gateway_port, smtp_port = free_port(), free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFEX_")}
    env |= {
        "SELFEX_EMBEDDED_KAFKA_PORT": str(kafka_port),
        "SELFEX_EMBEDDED_MONGO_PORT": str(mongo_port),
        "SELFEX_GATEWAY_PORT": str(gateway_port),
        "SELFEX_SMTP_PORT": str(smtp_port),
        "SELFEX_AUDIT_VERIFY_SECONDS": "2",  # the console's "Audit chain" page sees a tampering within seconds
    }
    log = folder / "selfex-up.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(selfex_command() + ["up", "--demo-operator"], env=env, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_for_health(base_url, process, log, timeout=180)  # a loaded machine starts ten processes slowly
        servers = {
            "SELFEX_MONGO_URI": f"mongodb://127.0.0.1:{mongo_port}",
            "SELFEX_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
            "SELFEX_DEVELOPMENT": "true",
        }
        yield WebStack(base_url, folder / ".selfex" / "mail", env | servers, log)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _context(browser: Browser, web_stack: WebStack, locale: str) -> BrowserContext:
    # bypass_csp: the test injects axe-core into pages whose policy admits only their own scripts.
    context = browser.new_context(base_url=web_stack.base_url, locale=locale, bypass_csp=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    return context


@pytest.fixture
def page(browser: Browser, web_stack: WebStack, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a fresh English context; its last state is saved as ``<test>.png`` in ``tmp_path``."""
    context = _context(browser, web_stack, "en-GB")
    page = context.new_page()
    try:
        yield page
    finally:
        page.screenshot(path=str(tmp_path / f"{request.node.name}.png"), full_page=True)
        context.close()


@pytest.fixture
def swedish_page(browser: Browser, web_stack: WebStack, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a browser that prefers Swedish (``Accept-Language: sv-SE``)."""
    context = _context(browser, web_stack, "sv-SE")
    page = context.new_page()
    try:
        yield page
    finally:
        page.screenshot(path=str(tmp_path / f"{request.node.name}.png"), full_page=True)
        context.close()
