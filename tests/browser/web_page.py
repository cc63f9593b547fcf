"""Drives the web page in headless Chromium (Debian's), as a person would:
log in wrong then right, watch the live view, open an alert, mark it a
false positive by keyboard, look at System and Config, log out.

Usage: web_page.py BASE_URL USER PASSWORD WRONG_PASSWORD SCREENSHOT_DIR
Prints one JSON line: what the Rust test checks afterwards. Any failed
check raises, and the exit status is not 0.
"""

import json
import sys
import time

from playwright.sync_api import expect, sync_playwright

base, user, password, wrong, shots = sys.argv[1:6]
DEADLINE = 60.0


def until(what, check, timeout=DEADLINE):
    """Polls `check` until it answers something true, or fails naming `what`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        answer = check()
        if answer:
            return answer
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1200, "height": 900})

    # Without a session, a page sends you to log in.
    page.goto(base + "/alerts")
    assert page.url.endswith("/login"), page.url

    # A wrong password: an error on the page, and a 401.
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(wrong)
    with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as answer:
        page.get_by_label("Password").press("Enter")
    assert answer.value.status == 401, answer.value.status
    expect(page.locator("#login-error")).to_contain_text("Wrong user name or password")
    page.screenshot(path=f"{shots}/login-failed.png")

    # The right one, by keyboard: lands on Live.
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_label("Password").press("Enter")
    page.wait_for_url(base + "/")
    expect(page.get_by_role("heading", name="Live")).to_be_visible()

    # The demo camera's image changes between two reads.
    card = page.locator("figure[data-camera]").first
    camera = card.get_attribute("data-camera")
    latest = f"{base}/api/cameras/{camera}/latest.jpg"
    first = until("a first frame", lambda: (r := page.request.get(latest)).ok and r.body())
    until("a different frame", lambda: (r := page.request.get(latest)).ok and r.body() != first)
    until("the live image to load", lambda: page.evaluate(
        "() => { const i = document.querySelector('img.live'); return i.complete && i.naturalWidth > 0; }"))
    until("the frame rate to show", lambda: "fps" in card.inner_text() and "– fps" not in card.inner_text())
    page.screenshot(path=f"{shots}/live.png")

    # After the demo alert: Alerts lists it, and its snapshot loads.
    def listed():
        page.goto(base + "/alerts")
        return page.locator("tbody tr").count() > 0
    until("an alert on the Alerts page", listed)
    page.screenshot(path=f"{shots}/alerts.png")
    page.locator("tbody tr a").first.click()
    page.wait_for_url(lambda url: "/alerts/" in url)
    alert_id = page.url.rsplit("/", 1)[1]
    until("the snapshot to load", lambda: page.evaluate(
        "() => { const i = document.querySelector('img.snapshot'); return i.complete && i.naturalWidth > 0; }"))

    # Mark it a false positive with the keyboard alone.
    button = page.get_by_role("button", name="Mark false positive")
    button.focus()
    page.keyboard.press("Enter")
    page.wait_for_load_state()
    expect(page.get_by_text("false positive", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Not a false positive")).to_be_visible()
    page.screenshot(path=f"{shots}/alert.png", full_page=True)

    page.get_by_role("link", name="System").click()
    expect(page.get_by_role("heading", name="Supervised children")).to_be_visible()
    # The chart draws once two samples, 10 s apart, exist.
    def charted():
        page.reload()
        return page.locator("svg[role=img]").count() > 0
    until("the CPU and RSS chart", charted)
    page.screenshot(path=f"{shots}/system.png", full_page=True)
    page.get_by_role("link", name="Config").click()
    expect(page.get_by_role("heading", name="Running configuration (read-only, secrets redacted)")).to_be_visible()
    page.screenshot(path=f"{shots}/config.png")

    # Logout, and the pages are closed again.
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(base + "/login")
    page.goto(base + "/alerts")
    assert page.url.endswith("/login"), page.url
    browser.close()

print(json.dumps({"alert": alert_id, "camera": camera}))
