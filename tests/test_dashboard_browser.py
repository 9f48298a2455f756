"""The dashboard in a real headless Chromium (Debian's chromium and
chromedriver, driven by Selenium; nothing downloaded) against the live test
server: an advocate's Initial and Retraction, a reader's view and refused
POST, anonymous visitors sent to sign in. Saves the README's screenshots."""
import io
import json
import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from alerts import models
from alerts.science.plots import plot_allsky
from alerts.store import add_file
from alerts.vocabulary import (ADVNO, ADVOCATES_GROUP, ADVREQ, DATA_QUALITY_REPORT, DATA_QUALITY_TAG,
                               SKY_LOC_TAG)
from tests.annotated import annotated_event, tiny_skymap
from tests.factories import T0
from tests.test_dashboard import make_superevents

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900"]

DQ_REPORT = {"verdict": "pass", "injection": False, "labels": ["DQOK"], "instruments": ["H1", "L1"],
             "window": {"start": 1240216501.0, "end": 1240216505.0}, "skipped_reason": None,
             "checks": [{"channel": "H1:GDS-CALIB_STATE_VECTOR", "bit": 0, "name": "HOFT_OK", "state": "good"},
                        {"channel": "L1:GDS-CALIB_STATE_VECTOR", "bit": 0, "name": "HOFT_OK", "state": "good"}],
             "notes": []}

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def browser():
    assert shutil.which("chromium") and shutil.which("chromedriver"), \
        "install Debian's chromium and chromium-driver (scripts/test.sh does)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


@pytest.fixture
def decisions(monkeypatch):
    """The decision service the dashboard calls."""
    from alerts import decisions as service
    return service


@pytest.fixture
def people(db):
    advocates, _ = Group.objects.get_or_create(name=ADVOCATES_GROUP)
    User.objects.create_user("ada", password="ada-pw").groups.add(advocates)
    User.objects.create_user("rita", password="rita-pw")


def sign_in(driver, live_server, username, password):
    driver.get(live_server.url + reverse("dashboard:login"))
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(password)
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, 10).until(expected_conditions.title_contains("Superevents"))


def screenshot(driver, name):
    """A small PNG of the page (for the README)."""
    from PIL import Image
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("P", palette=Image.ADAPTIVE, colors=64)
    image.save(SCREENSHOTS / name, optimize=True)
    assert (SCREENSHOTS / name).stat().st_size < 300_000


def outbox_files(settings):
    directory = Path(settings.ORCHESTRATOR["NOTICE_DESTINATIONS"][0]["directory"])
    return sorted(path.name for path in directory.rglob("*.json")) if directory.exists() else []


def test_advocate_sends_the_initial_and_retracts_another(browser, live_server, people, decisions, settings):
    older, waiting = make_superevents(2, waiting=(1,))
    # A real Mollweide plot and data-quality report for the screenshot.
    event = waiting.preferred_event
    add_file(waiting, "bayestar.png", plot_allsky(tiny_skymap()), tags=[SKY_LOC_TAG], announce=False)
    add_file(event, DATA_QUALITY_REPORT, json.dumps(DQ_REPORT).encode(), tags=[DATA_QUALITY_TAG], announce=False)
    sign_in(browser, live_server, "ada", "ada-pw")
    row = browser.find_element(By.CSS_SELECTOR, "tr.waiting")
    assert row.get_attribute("data-id") == waiting.superevent_id
    screenshot(browser, "list.png")
    row.find_element(By.LINK_TEXT, waiting.superevent_id).click()
    WebDriverWait(browser, 10).until(expected_conditions.title_contains(waiting.superevent_id))
    image = browser.find_element(By.ID, "skymap")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0
    image_url = image.get_attribute("src")
    responses = [entry for entry in browser.get_log("performance")
                 if '"Network.responseReceived"' in entry["message"] and image_url in entry["message"]]
    assert responses and '"status":200' in responses[-1]["message"].replace(" ", "")
    assert browser.execute_script("return arguments[0].naturalWidth", image) > 100  # the real plot
    assert browser.find_element(By.ID, "p-astro-chart").is_displayed()
    assert "HOFT_OK" in browser.find_element(By.ID, "dq").text
    screenshot(browser, "superevent.png")

    browser.find_element(By.ID, "advok").click()
    WebDriverWait(browser, 10).until(expected_conditions.title_contains("Confirm"))
    assert "INITIAL" in browser.find_element(By.ID, "preview").text
    assert waiting.superevent_id in browser.find_element(By.ID, "preview-circular").text
    send = browser.find_element(By.ID, "send")
    send.click()
    WebDriverWait(browser, 10).until(expected_conditions.title_is(f"{waiting.superevent_id} · GW alert orchestrator"))
    notices = browser.find_element(By.ID, "notices").text
    notice = models.Notice.objects.get(superevent=waiting)
    assert notice.alert_type == "INITIAL" and notice.identity in notices
    assert "sent" in notices
    assert notice.identity in browser.find_element(By.CLASS_NAME, "messages").text
    assert [name for name in outbox_files(settings) if notice.identity in name] == [f"{notice.identity}.json"]

    browser.get(live_server.url + reverse("dashboard:confirm", args=[older.superevent_id, ADVNO]))
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, 10).until(expected_conditions.title_contains(older.superevent_id))
    browser.get(live_server.url + reverse("dashboard:list"))
    retracted = browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{older.superevent_id}"]')
    assert "retracted" in retracted.get_attribute("class") and "RETRACTION" in retracted.text
    assert models.Notice.objects.filter(superevent=older, alert_type="RETRACTION").count() == 1


def test_reader_sees_no_actions_and_a_forged_post_is_refused(browser, live_server, people, decisions, settings):
    superevent, = make_superevents(1, waiting=(0,))
    sign_in(browser, live_server, "rita", "rita-pw")
    # The list refreshes itself (htmx polling the rows) without a full reload.
    browser.execute_script("window.notReloaded = true")
    newer = annotated_event(gpstime=T0 + 5000).superevent
    WebDriverWait(browser, 20).until(expected_conditions.presence_of_element_located(
        (By.CSS_SELECTOR, f'tr[data-id="{newer.superevent_id}"]')))
    assert browser.execute_script("return window.notReloaded") is True
    browser.get(live_server.url + reverse("dashboard:superevent", args=[superevent.superevent_id]))
    assert browser.find_elements(By.ID, "actions") == []
    assert browser.find_elements(By.CSS_SELECTOR, "main form[method=post]") == []
    # A POST made by hand with the reader's session and a valid CSRF token.
    status = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const token = document.cookie.split('; ').find(c => c.startsWith('csrftoken=')).split('=')[1];
        fetch(arguments[0], {method: 'POST', headers: {'X-CSRFToken': token,
              'Content-Type': 'application/x-www-form-urlencoded'}, body: 'action=ADVOK'})
          .then(r => done(r.status));
    """, live_server.url + reverse("dashboard:act", args=[superevent.superevent_id]))
    assert status == 403
    assert not models.Notice.objects.filter(superevent=superevent).exists()
    assert outbox_files(settings) == []
    assert ADVREQ in superevent.label_names() and "ADVOK" not in superevent.label_names()
    # Readable at a phone's width: nothing wider than the screen but the scrolling tables.
    browser.set_window_size(390, 844)
    for page in (reverse("dashboard:list"), reverse("dashboard:superevent", args=[superevent.superevent_id])):
        browser.get(live_server.url + page)
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"), page


def test_anonymous_visitor_is_sent_to_sign_in(browser, live_server, people):
    superevent, = make_superevents(1)
    event = superevent.events.first()
    file = models.File.objects.filter(event=event).first()
    for page in (reverse("dashboard:list"), reverse("dashboard:superevent", args=[superevent.superevent_id]),
                 reverse("dashboard:event", args=[event.graceid]), reverse("dashboard:file", args=[file.pk]),
                 reverse("dashboard:confirm", args=[superevent.superevent_id, "ADVOK"])):
        browser.get(live_server.url + page)
        assert browser.title.startswith("Sign in"), page
        assert reverse("dashboard:login") in browser.current_url
