"""The compliance console in Debian's Chromium against the stack as ``make run`` starts it: sign-in
with a staff key (secure session cookie, CSRF), audit search with paging, export as CSV and JSON
Lines, a person's printable statement, statistics drawn by Chart.js, and an identity document
uploaded on the portal, viewed and approved in the console."""

import csv
import io
import json
import re
import struct
import time
import uuid
import zlib
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from starlette.requests import Request

from services.gateway.web.console_pages import charts_of, span, statistics_view, when
from services.gateway.web.rendering import page as render
from tests.audit.test_forwarding_statistics import SPELPAUS_ON_THE_12TH
from tests.web.browsing import accessible
from tests.web.conftest import WebStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def staff_key(web_stack: WebStack) -> str:
    return web_stack.staff_key(f"Casework {uuid.uuid4().hex[:6]}", "register-staff")


@pytest.fixture(scope="module")
def person(web_stack: WebStack) -> dict:
    """A person an operator excluded (through the native API), so the audit log has their records."""
    identity = {"first_name": "Luna", "last_name": "Lovegood", "date_of_birth": "1981-02-13", "postcode": "EX1 1AA"}
    identity["email"] = f"luna-{uuid.uuid4().hex[:8]}@example.com"
    created = httpx.post(
        f"{web_stack.base_url}/v1/exclusions",
        headers={"X-API-Key": web_stack.demo_key()},
        json={"identity": identity, "duration": "+6m", "jurisdiction": "UK", "year_of_birth": 1981, "gender": "F"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    return {"identity": identity, "exclusion_id": created.json()["exclusion_id"]}


def signed_in(page: Page, key: str) -> Page:
    page.goto("/console")
    expect(page).to_have_url(re.compile("/console/login$"))
    page.get_by_label("Your staff API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Compliance console")).to_be_visible()
    return page


def in_the_audit_log(page: Page, person: dict, deadline_seconds: float = 30.0) -> None:
    """Search for the person until their records are in the log (the audit service appends on its own time)."""
    deadline = time.monotonic() + deadline_seconds
    page.goto("/console/audit")
    page.get_by_label("E-mail address").fill(person["identity"]["email"])
    while True:
        page.get_by_role("button", name="Search", exact=True).click()
        if page.locator("#results tbody tr").filter(has_text="exclusion.activated").count() or time.monotonic() > deadline:
            break
        page.wait_for_load_state()
    expect(page.locator("#results tbody tr").filter(has_text="exclusion.activated")).to_have_count(1)


def test_sign_in_takes_only_staff_keys_into_a_secure_session_with_csrf(page: Page, web_stack: WebStack, staff_key: str):
    page.goto("/console/login")
    accessible(page)
    page.get_by_label("Your staff API key").fill(web_stack.demo_key())  # an operator's key is no staff key
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#key-error")).to_have_text("That key is not a register-staff or regulator key.")
    forged = page.request.post("/console/login", form={"key": staff_key, "csrf": "forged"}, max_redirects=0)
    assert forged.status == 400, "a sign-in without the session's CSRF token is refused"

    signed_in(page, staff_key)
    cookie = next(c for c in page.context.cookies() if c["name"] == "selfex_console")
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Lax")
    assert staff_key not in cookie["value"], "the key is sealed in the cookie, not readable"
    accessible(page)
    page.get_by_role("button", name="Sign out").click()
    page.goto("/console/audit")
    expect(page).to_have_url(re.compile("/console/login$"))


def test_audit_search_pages_and_exports_csv_and_json_lines(page: Page, staff_key: str, person: dict):
    signed_in(page, staff_key)
    in_the_audit_log(page, person)
    accessible(page)
    expect(page.locator("#results tbody tr").filter(has_text="exclusion.request")).not_to_have_count(0)

    page.goto("/console/audit")
    page.get_by_label("Records per page").select_option("10")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#results tbody tr")).to_have_count(10)
    first_page = page.locator("#results tbody tr").first.inner_text()
    page.get_by_role("button", name="Next page").click()
    expect(page.get_by_role("heading", name=re.compile("Records, page 2"))).to_be_visible()
    expect(page.locator("#results tbody tr").first).not_to_have_text(first_page)

    page.goto("/console/audit")
    page.get_by_label("E-mail address").fill(person["identity"]["email"])
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert {"exclusion.request", "exclusion.activated"} <= {row["type"] for row in rows}
    assert all(person["identity"]["email"] not in json.dumps(row) for row in rows), "no raw e-mail in the log"
    with page.expect_download() as download:
        page.get_by_role("button", name="Export JSON Lines").click()
    lines = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines() if line]
    assert len(lines) == len(rows) and {line["id"] for line in lines} == {row["id"] for row in rows}


def test_a_persons_statement_is_printable(page: Page, staff_key: str, person: dict):
    signed_in(page, staff_key)
    in_the_audit_log(page, person)
    page.goto("/console/statement")
    page.get_by_label("E-mail address").fill(person["identity"]["email"])
    page.get_by_role("button", name="Show the statement").click()
    entries = page.locator("#statement-entries tbody tr")
    expect(entries.filter(has_text="Exclusion requested")).to_have_count(1)
    expect(entries.filter(has_text="Exclusion in force")).to_have_count(1)
    expect(page.locator("#statement")).to_contain_text(person["exclusion_id"])
    accessible(page)
    page.emulate_media(media="print")
    expect(page.get_by_role("button", name="Show the statement")).to_be_hidden()  # printed: the statement, not the form
    expect(page.locator("#statement-entries")).to_be_visible()


def test_statistics_are_drawn_as_charts(page: Page, staff_key: str, person: dict, tmp_path: Path):
    signed_in(page, staff_key)
    in_the_audit_log(page, person)
    page.goto("/console/statistics")
    canvas = page.locator("#chart-exclusions_started-jurisdiction")
    expect(canvas).to_be_visible()
    drawn = page.evaluate(
        "() => { const chart = Chart.getChart('chart-exclusions_started-jurisdiction');"
        " return chart ? {labels: chart.data.labels, data: chart.data.datasets[0].data} : null }"
    )
    assert drawn is not None, "Chart.js drew the chart"
    assert "UK" in drawn["labels"] and sum(drawn["data"]) >= 1
    box = canvas.bounding_box()
    assert box is not None and box["height"] > 100
    over_time = page.evaluate(
        "() => { const chart = Chart.getChart('chart-active-per-month');"
        " return chart ? Object.fromEntries(chart.data.datasets.map(d => [d.label, d.data])) : null }"
    )
    assert over_time is not None and over_time["UK"][-1] >= 1, f"this month's active UK exclusions, drawn: {over_time}"
    # A register-staff key sees the forwarder's lag: its table, or "no forwarder reported" (the stack forwards to no register).
    expect(page.get_by_role("heading", name="Forwarding to the register")).to_be_visible()
    expect(page.locator("#forwarding-deliveries")).to_contain_text(re.compile(r"In this period: \d+ delivered, \d+ failed\."))
    expect(page.locator("#forwarding-status, #forwarding-none").first).to_be_visible()
    accessible(page)
    page.screenshot(path=str(tmp_path / "statistics.png"), full_page=True)
    page.get_by_role("link", name="Dead letters").click()
    expect(page.get_by_role("heading", name="Dead letters per topic")).to_be_visible()
    expect(page.locator("#dead-letters")).to_be_visible()


def a_png() -> bytes:
    """A real 4×2 PNG (red), as a phone's camera would send a much larger one."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\x00" + b"\xcc\x22\x22" * 4) * 2
    header = struct.pack(">IIBBBBB", 4, 2, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_a_document_uploaded_on_the_portal_is_viewed_and_approved_in_the_console(
    browser: Browser, page: Page, web_stack: WebStack, staff_key: str, tmp_path: Path
):
    person = browser.new_context(base_url=web_stack.base_url, locale="de-DE", bypass_csp=True)
    portal = person.new_page()
    try:
        portal.goto("/portal/request?jurisdiction=DE&lang=en")
        portal.get_by_label("3 months").check()
        portal.get_by_label("First name").fill("Greta")
        portal.get_by_label("Last name").fill("Beispiel")
        portal.get_by_label("Date of birth (YYYY-MM-DD)").fill("1975-05-06")
        portal.get_by_label("Postcode").fill("10115")
        portal.get_by_label("E-mail address").fill(f"greta-{uuid.uuid4().hex[:8]}@example.de")
        portal.get_by_label(re.compile("I understand")).check()
        portal.get_by_role("button", name="Exclude me").click()
        expect(portal).to_have_url(re.compile("/portal/document$"))
        accessible(portal)
        document = tmp_path / "passport.png"
        document.write_bytes(a_png() + bytes(300 * 1024))  # a phone photo's size (past the 64 KB of a JSON body); viewers ignore the tail
        portal.get_by_label("The document").set_input_files(document)
        portal.get_by_role("button", name="Upload").click()
        expect(portal.locator("#document-sent")).to_contain_text("your document is waiting for review")
        accessible(portal)
    finally:
        person.close()

    signed_in(page, staff_key)
    page.get_by_role("link", name="Document reviews").click()
    row = page.locator("#queue tbody tr").filter(has_text="image/png").last
    deadline = time.monotonic() + 30
    while not row.count() and time.monotonic() < deadline:  # verification takes the upload on its own time
        page.reload()
    exclusion_id = row.locator("td").nth(1).inner_text()
    row.get_by_role("link").click()
    expect(page.locator("#document-image")).to_be_visible()
    # Visible is not loaded: wait (Playwright's deadline) until the browser has fetched and decoded it.
    page.wait_for_function("() => document.getElementById('document-image').complete", timeout=15_000)
    assert page.evaluate("() => document.getElementById('document-image').naturalWidth") == 4, "the document itself, opened"
    accessible(page)
    page.get_by_role("button", name="Reject").click()
    expect(page.locator("#review-error")).to_have_text("Say why the document is rejected: the person is told.")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#flash")).to_contain_text("approved: the verification is now")  # verified, or still on its way

    deadline = time.monotonic() + 30
    while True:  # the approved request takes effect: registration activates it
        state = httpx.get(f"{web_stack.base_url}/v1/exclusions/{exclusion_id}", headers={"X-API-Key": staff_key}, timeout=10).json()
        if state.get("state") != "pending_verification" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert state["state"] in ("active", "cooling_off"), state
    page.reload()
    expect(page.locator("#queue")).not_to_contain_text(exclusion_id)


def chain_shows(page: Page, status: str, deadline_seconds: float = 30.0) -> None:
    """Reload the "Audit chain" page until it shows ``status`` (the stack verifies every 2 s here)."""
    shown = page.locator("#chain-status")
    deadline = time.monotonic() + deadline_seconds
    while shown.get_attribute("data-status") != status and time.monotonic() < deadline:
        time.sleep(0.2)
        page.reload()
    expect(shown).to_have_attribute("data-status", status)


def test_the_audit_chain_is_shown_intact_then_the_record_tampered_with_in_the_store(
    page: Page, web_stack: WebStack, staff_key: str, person: dict, tmp_path: Path
):
    signed_in(page, staff_key)
    in_the_audit_log(page, person)
    page.get_by_role("link", name="Audit chain").click()
    expect(page.get_by_role("heading", name="Audit chain", level=1)).to_be_visible()
    chain_shows(page, "intact")
    expect(page.locator("#chain-status")).to_contain_text(re.compile(r"\d+ records in \d+ chains verified at .* no broken link"))
    accessible(page)

    with web_stack.store("audit") as audit:  # as tests/audit tamper: the store changed directly, past the service
        victim = audit["audit_log"].find_one({"type": "exclusion.activated", "refs": {"$in": [person["exclusion_id"]]}})
        assert victim is not None, "the person's activation is in the log"
        body = json.loads(victim["body"])
        body["recorded_at"] = "2001-01-01T00:00:00.000+00:00"
        audit["audit_log"].update_one({"_id": victim["_id"]}, {"$set": {"body": json.dumps(body)}})

    chain_shows(page, "tampered")
    expect(page.locator("#chain-status h2")).to_have_text("TAMPERED: the audit log was changed in the store")
    expect(page.locator("#chain-first-broken")).to_contain_text(f"record {victim['_id']}: modified")
    expect(page.locator("#chain-findings tbody tr").filter(has_text=victim["_id"])).to_have_count(1)
    accessible(page)
    page.screenshot(path=str(tmp_path / "audit-chain.png"), full_page=True)


def chain_page(status: dict) -> str:
    """The "Audit chain" page for a verification status, rendered without a browser."""
    request = Request(
        {"type": "http", "method": "GET", "path": "/console/chain", "headers": [(b"host", b"selfex.test")], "query_string": b""}
    )
    rendered = render(request, "console/chain.html", csrf="c", who=None, status=status, error=None, when=when, span=span)
    return bytes(rendered.body).decode()


def test_never_verified_and_stale_are_warnings_never_intact():
    result = {"ended_at": "2026-05-04T07:00:00.000+00:00", "interval_seconds": 3600, "records": 12, "chains": 3, "seconds": 0.1}
    broken = {"chain": "selfex.decisions/2", "seq": 7, "record_id": "r-7", "kind": "deleted", "detail": "seq 5 to 6 are gone"}

    never = chain_page({"status": "never_verified", "stale": False, "every_seconds": 3600, "verification": None})
    off = chain_page({"status": "never_verified", "stale": False, "every_seconds": 0, "verification": None})
    stale = chain_page({"status": "intact", "stale": True, "every_seconds": 3600, "verification": {**result, "findings": []}})
    stale_tampered = chain_page(
        {"status": "tampered", "stale": True, "every_seconds": 3600, "verification": {**result, "findings": [broken], "findings_total": 1}}
    )

    assert 'data-status="never_verified"' in never and "Not verified yet" in never and "every 1 h" in never
    assert "SELFEX_AUDIT_VERIFY_SECONDS is 0" in off
    assert 'data-status="stale"' in stale and "Not verified recently" in stale and "2026-05-04 07:00:00 UTC" in stale
    for shown in (never, off, stale):
        assert "Intact" not in shown and 'data-status="intact"' not in shown
    assert 'data-status="tampered"' in stale_tampered and "Not verified recently" in stale_tampered
    assert "chain selfex.decisions/2, seq 7, record r-7: deleted" in stale_tampered


def statistics_page(figures: dict) -> str:
    """The "Statistics" page for the statistics JSON, rendered without a browser."""
    request = Request(
        {"type": "http", "method": "GET", "path": "/console/statistics", "headers": [(b"host", b"selfex.test")], "query_string": b""}
    )
    rendered = render(request, "console/statistics.html", csrf="c", who=None, **statistics_view(figures, charts_of(figures), None, "", ""))
    return bytes(rendered.body).decode()


def forwarding_row(html: str, register: str) -> str:
    found = re.search(rf'<tr data-register="{re.escape(register)}".*?</tr>', html, re.S)
    assert found, f"a row for {register}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(0)))


def test_the_forwarders_lag_is_shown_per_register_with_its_warnings_and_not_at_all_for_an_operators_scope():
    figures = {
        "from": "2026-01-01T00:00:00+00:00",
        "to": "2026-02-01T00:00:00+00:00",
        "exclusions_started": {"total": 0},
        "exclusions_active": {"total": 0},
        "decisions_by_day": [],
        "time_to_enforcement_ms": {"count": 0},
        "dead_letters_by_topic": {},
    }
    lagging = dict(SPELPAUS_ON_THE_12TH)  # as the audit statistics carry it
    keeping_up = {
        **lagging,
        "pending": 3,
        "failed": 0,
        "oldest_pending_age_seconds": 180.0,
        "oldest_pending_at": "2026-01-12T11:57:00Z",
        "last_sync_at": "2026-01-12T10:00:00Z",
        "last_sync_age_seconds": 7200.0,
        "breaker": "closed",
        "stopping": True,
    }
    importing = {
        **keeping_up,
        "adapter": None,
        "pending": 0,
        "oldest_pending_at": None,
        "oldest_pending_age_seconds": None,
        "breaker": None,
    }
    reported = {
        "deliveries": {"delivered": 17, "failed": 4},
        "status_by_register": {"spelpaus": lagging, "gamstop": keeping_up, "none": importing},
    }

    html = statistics_page({**figures, "forwarding": reported})
    assert '<h2 id="forwarding-title">Forwarding to the register</h2>' in html
    assert "<caption>Each register&#39;s forwarding status</caption>" in html and '<th scope="row">spelpaus</th>' in html
    assert "In this period: 17 delivered, 4 failed." in html
    spelpaus = forwarding_row(html, "spelpaus")
    assert "2026-01-12 12:00:00 UTC" in spelpaus and " 2 since 2026-01-12 10:30:00 UTC (90 min) 1 2026-01-12 09:00:00 UTC " in spelpaus
    assert "2026-01-11 11:00:00 UTC (25 h before the report)" in spelpaus and " open " in spelpaus
    assert "Warning: the oldest pending delivery has waited 90 min, more than 1 h." in spelpaus
    assert "Warning: the last successful sync was 25 h before the report, more than 24 h." in spelpaus
    assert "Warning: the register's circuit breaker is open" in spelpaus.replace("&#39;", "'")
    gamstop = forwarding_row(html, "gamstop")
    assert "since 2026-01-12 11:57:00 UTC (3 min)" in gamstop and "(2 h before the report)" in gamstop and " closed " in gamstop
    assert "the forwarder's last report before it stopped" in gamstop.replace("&#39;", "'")
    assert "Warning" not in gamstop and "No warning" in gamstop
    only_imports = forwarding_row(html, "none")
    assert "none (imports only)" in only_imports and "nothing pending" in only_imports and "not forwarding" in only_imports
    assert "Warning" not in only_imports

    silent = statistics_page({**figures, "forwarding": {"deliveries": {"delivered": 0, "failed": 0}, "status_by_register": {}}})
    assert "No forwarder reported its status by the end of this period." in silent and "In this period: 0 delivered, 0 failed." in silent
    assert 'id="forwarding-status"' not in silent

    operators = statistics_page(figures)  # an operator's scope: no forwarding section
    assert "Forwarding to the register" not in operators and 'id="forwarding' not in operators
    assert 'id="dead-letters"' in operators, "the rest of the page is there"
