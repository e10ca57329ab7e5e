"""The self-exclusion portal in Debian's Chromium against the stack as ``make run`` starts it: the
panic button (with JavaScript off), the full request with its code from the SMTP sink, the
confirmation, the status page's extend and lift request, errors in Swedish beside their fields, the
operators' notice link; axe-core finds no serious or critical violation on any portal page."""

import re
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.web.browsing import accessible, code_in, mail_count, mail_to
from tests.web.conftest import WebStack

pytestmark = pytest.mark.e2e

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]


def written(day: date) -> str:
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def an_address() -> str:
    return f"person-{uuid.uuid4().hex[:10]}@example.com"


def test_the_landing_page_links_the_portal_the_console_and_the_docs_and_post_stays_the_gamstop_check(page: Page, web_stack: WebStack):
    page.goto("/")
    expect(page.get_by_role("link", name="Exclude yourself, or see your exclusion")).to_have_attribute("href", "/portal")
    expect(page.get_by_role("link", name=re.compile("Compliance console"))).to_have_attribute("href", "/console")
    expect(page.get_by_role("link", name="API documentation for operators")).to_have_attribute("href", "/docs")
    accessible(page)
    person = {"firstName": "Harry", "lastName": "Potter", "dateOfBirth": "1980-07-31", "email": an_address(), "postcode": "GU1 1AA"}
    gamstop = httpx.post(f"{web_stack.base_url}/", data=person, headers={"X-API-Key": web_stack.demo_key()}, timeout=10)
    assert (gamstop.status_code, gamstop.headers.get("X-Exclusion")) == (200, "N"), "POST / is still the GAMSTOP check"


def test_the_panic_button_excludes_for_24_hours_with_the_mailed_code_and_no_javascript(
    browser: Browser, web_stack: WebStack, tmp_path: Path
):
    context = browser.new_context(base_url=web_stack.base_url, java_script_enabled=False, locale="en-GB")
    page = context.new_page()
    try:
        page.goto("/portal")
        expect(page.get_by_role("heading", name="Stop now for 24 hours")).to_be_visible()
        address, kept = an_address(), mail_count(web_stack.mail)
        page.get_by_label("Your e-mail address or mobile number").fill(address)
        page.get_by_role("button", name="Exclude me from everything for 24 hours").click()
        expect(page).to_have_url(re.compile("/portal/code$"))
        expect(page.get_by_text("We sent a 6-digit code to p…@example.com")).to_be_visible()
        page.get_by_label("Code").fill(code_in(mail_to(web_stack.mail, address, after=kept)))
        page.get_by_role("button", name="Confirm").click()
        expect(page).to_have_url(re.compile("/portal/done$"))
        today = datetime.now(UTC).date()
        expect(page.locator("#banner")).to_contain_text(f"Excluded from {written(today)} until {written(today + timedelta(days=1))}")
    finally:
        page.screenshot(path=str(tmp_path / "panic-confirmation.png"), full_page=True)
        context.close()


def test_the_full_request_then_the_status_page_extends_and_asks_for_a_lift(page: Page, web_stack: WebStack, tmp_path: Path):
    page.goto("/portal")
    accessible(page)
    page.screenshot(path=str(tmp_path / "portal.png"), full_page=True)
    page.get_by_role("link", name="Choose a longer exclusion").click()
    page.wait_for_load_state()  # the page's script listens for the choice once loaded
    page.get_by_label("Where you gamble").select_option("UK")
    expect(page).to_have_url(re.compile(r"/portal/request\?jurisdiction=UK$"))
    expect(page.get_by_label("First name")).to_be_visible()  # the country's identity fields, chosen by script
    accessible(page)
    page.get_by_label("6 months").check()
    expect(page.get_by_text(re.compile("Lasts at least until .*; after that it stays until you ask to lift it")).first).to_be_visible()
    page.get_by_label("Direct marketing from gambling companies").check()
    address, kept = an_address(), mail_count(web_stack.mail)
    page.get_by_label("First name").fill("Harriet")
    page.get_by_label("Last name").fill("Potter")
    page.get_by_label("Date of birth (YYYY-MM-DD)").fill("1981-07-31")
    page.get_by_label("Postcode").fill("GU1 1AA")
    page.get_by_label("E-mail address").fill(address)
    page.get_by_label("By e-mail").check()
    page.get_by_label(re.compile("I understand that this exclusion cannot be removed early")).check()
    page.get_by_role("button", name="Exclude me").click()

    expect(page).to_have_url(re.compile("/portal/code$"))
    accessible(page)
    page.get_by_label("Code").fill("000000" if code_in(mail_to(web_stack.mail, address, after=kept)) != "000000" else "111111")
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#code-error")).to_contain_text("That code is not right. 4 tries left.")
    accessible(page)
    page.get_by_label("Code").fill(code_in(mail_to(web_stack.mail, address, after=kept)))
    page.get_by_role("button", name="Confirm").click()

    expect(page).to_have_url(re.compile("/portal/done$"))
    today = datetime.now(UTC).date()
    expect(page.locator("#banner")).to_contain_text(f"Excluded from {written(today)} until further notice.")
    expect(page.locator("#banner")).to_contain_text("The earliest you can ask to lift it:")
    accessible(page)
    page.screenshot(path=str(tmp_path / "confirmation.png"), full_page=True)

    page.get_by_role("link", name="See your exclusion").click()
    expect(page).to_have_url(re.compile("/portal/status$"))
    expect(page.get_by_role("heading", name="UK · in force")).to_be_visible()
    minimum_before = page.locator(".facts dd").nth(2).inner_text()
    accessible(page)
    page.screenshot(path=str(tmp_path / "status.png"), full_page=True)

    page.get_by_label("12 months").check()
    page.get_by_role("button", name="Extend").click()
    expect(page.locator("#flash")).to_have_text("Your exclusion is extended.")
    expect(page.locator(".facts dd").nth(2)).not_to_have_text(minimum_before)  # the earliest lift moved later
    expect(page.get_by_label("6 months")).to_have_count(0)  # never shorter: a shorter duration is not offered

    kept = mail_count(web_stack.mail)
    page.get_by_role("button", name="Ask to lift my exclusion").click()
    expect(page).to_have_url(re.compile("/portal/lift$"))
    expect(page.get_by_text("We sent a 6-digit code to your contact on file.")).to_be_visible()
    accessible(page)
    page.get_by_label("Code").fill(code_in(mail_to(web_stack.mail, address, after=kept)))
    page.get_by_role("button", name="Confirm").click()
    expect(page).to_have_url(re.compile("/portal/status$"))
    expect(page.locator("#flash")).to_contain_text("Your request to lift it was refused:")  # the 12-month minimum has not passed
    expect(page.get_by_role("heading", name="UK · in force")).to_be_visible()


def test_errors_are_in_swedish_beside_their_fields_and_the_form_keeps_what_was_typed(swedish_page: Page):
    page = swedish_page
    page.goto("/portal/request?jurisdiction=SE")
    expect(page.locator("html")).to_have_attribute("lang", "sv")
    expect(page.get_by_role("heading", name="Stäng av dig själv")).to_be_visible()
    page.get_by_label("3 månader").check()
    page.get_by_label("Personnummer (12 siffror)").fill("12345")
    page.get_by_label("E-postadress").fill("kim@example.se")
    page.get_by_role("button", name="Stäng av mig").click()

    expect(page.get_by_role("alert")).to_contain_text("Rätta de markerade fälten")
    expect(page.locator("#national_id-error")).to_have_text("Ange ditt personnummer med 12 siffror, som 198507091234.")
    expect(page.get_by_label("Personnummer (12 siffror)")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#consent-error")).to_have_text("Kryssa i rutan för att bekräfta att du förstår.")
    expect(page.get_by_label("Personnummer (12 siffror)")).to_have_value("12345")
    expect(page.get_by_label("E-postadress")).to_have_value("kim@example.se")
    expect(page.get_by_label("3 månader")).to_be_checked()
    accessible(page)

    page.get_by_role("link", name="In English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.goto("/portal")  # the choice is remembered over the browser's preference
    expect(page.get_by_role("heading", name="Take a break from gambling")).to_be_visible()


def test_an_operator_links_an_excluded_customer_to_the_notice_with_its_date_and_no_identity(page: Page, web_stack: WebStack):
    key = web_stack.demo_key()
    person = {"first_name": "Ron", "last_name": "Weasley", "date_of_birth": "1980-03-01", "postcode": "OX1 1AA", "email": an_address()}
    created = httpx.post(
        f"{web_stack.base_url}/v1/exclusions",
        headers={"X-API-Key": key},
        json={"identity": person, "duration": "+30d", "jurisdiction": "SE"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    link = httpx.post(f"{web_stack.base_url}/v1/notices", headers={"X-API-Key": key}, json={"identity": person}, timeout=30)
    assert link.status_code == 200, link.text
    ends = date.fromisoformat(created.json()["ends_at"][:10])
    assert link.json()["until"] == ends.isoformat()
    assert "Weasley" not in link.json()["url"] and person["email"] not in link.json()["url"]

    page.goto(link.json()["url"])
    expect(page.locator("#notice-text")).to_have_text(
        f"Your account is blocked as part of the responsible gambling programme until {written(ends)}."
    )
    expect(page.get_by_role("heading", name="Help and support")).to_be_visible()
    accessible(page)
    page.goto(link.json()["url"][:-3] + "AAA")  # an altered token shows no date
    expect(page.locator("#notice-text")).to_contain_text("This link has expired or is not valid.")
    accessible(page)
    nobody = httpx.post(
        f"{web_stack.base_url}/v1/notices", headers={"X-API-Key": key}, json={"identity": {"email": an_address()}}, timeout=30
    )
    assert nobody.status_code == 404
