"""The shipped dashboard in a real browser: Mosquitto + Node-RED with dashboard/flows.json + main.py + headless
Chromium. The page must show what the line published: the latest verdict, the counters, the four images and a
shift summary. Screenshots are saved to tests/artifacts/ (dashboard.png; dashboard-chart.png, the whole page after
a restart, a pause and two shift changes, is the one in docs/).

The other tests drive the real line code (utils.line.InspectionLine with the real Inspector, Journal and
MqttPublisher) on a settable clock, so that shift changes, pauses and restarts happen in seconds: the "Last shifts"
table must show each shift the line published, newest first; parts/min must not outlive the line going offline;
the counters say since when they count; the score chart breaks its line across a restart or a long pause.
The browser runs in the Europe/Berlin time zone (Chromium's own emulation), so that times on the page are
checked against local times that differ from UTC.

Needs Node.js, `npm ci` in dashboard/, Chromium with its driver (Debian: chromium, chromium-driver) and the
selenium package; without them the test is skipped with the reason.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import cv2
import paho.mqtt.client as mqtt
import pytest

from tests.line_fixtures import (PROJECT_ROOT, WAIT_S, broker, free_port, main_py_command,  # noqa: F401
                                 port_accepts, read_journal, subscriber_factory, wait_until)

PREFIX = "plant/line7"
ZONE = ZoneInfo("Europe/Berlin")  # the browser's time zone in these tests (Chromium emulates it)
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
SCORE_BLUE = (0x00, 0x95, 0xFF)  # the chart's first colour: the score series
DASHBOARD = PROJECT_ROOT / "dashboard"
ARTIFACTS = PROJECT_ROOT / "tests" / "artifacts"
CHROMIUM = next((path for path in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if path and os.access(path, os.X_OK)), None)
CHROMEDRIVER = next((path for path in (shutil.which("chromedriver"), "/usr/bin/chromedriver")
                     if path and os.access(path, os.X_OK)), None)


def missing_requirements() -> str | None:
    if shutil.which("node") is None:
        return "Node.js is not installed"
    if not (DASHBOARD / "node_modules" / "node-red").is_dir():
        return "dashboard/node_modules is missing: run `npm ci` in dashboard/"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed"
    return None


@pytest.fixture
def node_red(broker, tmp_path):
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    port = free_port()
    environment = {**os.environ, "MQTT_HOST": "127.0.0.1", "MQTT_PORT": str(broker.port),
                   "AIVISION_TOPIC_PREFIX": PREFIX, "DASHBOARD_PORT": str(port),
                   "AIVISION_NODE_RED_DIR": str(tmp_path / "node-red")}
    log_path = tmp_path / "node-red.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["node", str(DASHBOARD / "node_modules" / "node-red" / "red.js"),
                                    "--settings", str(DASHBOARD / "settings.js")],
                                   env=environment, stdout=log, stderr=subprocess.STDOUT)
    try:
        # Its subscription is in effect once the broker logs it (earlier, a non-retained message could be missed).
        wait_until(lambda: f"{PREFIX}/#" in broker.log_text() or process.poll() is not None,
                   "Node-RED to subscribe", timeout_s=60)
        assert process.poll() is None, log_path.read_text()[-3000:]
        assert port_accepts(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=WAIT_S)
    log_text = log_path.read_text()
    assert "[error]" not in log_text, log_text[-3000:]  # e.g. a widget or the function node failing on a payload


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": str(ZONE)})
    yield driver
    driver.quit()


def publish_retained(port: int, topic: str, payload: dict) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, json.dumps(payload), qos=1, retain=True).wait_for_publish(timeout=WAIT_S)
    client.disconnect()
    client.loop_stop()


def text_of(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.ID, element_id)
    return found[0].text.strip() if found else ""


def test_dashboard_shows_the_lines_results_in_a_real_browser(broker, node_red, browser, tiny_run, tiny_demo,
                                                             tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    for path in sorted((tiny_demo / "test").rglob("*.png"))[::3]:
        shutil.copy(path, parts / f"{path.parent.name}_{path.name}")
    journal = tmp_path / "line.jsonl"
    completed = subprocess.run(
        main_py_command("--model", str(tiny_run), "--source", str(parts), "--mqtt-host", "127.0.0.1",
                        "--mqtt-port", str(broker.port), "--topic-prefix", PREFIX, "--journal", str(journal),
                        "--images", "all", "--shifts", "none"),
        capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = [record for record in read_journal(journal) if record["type"] == "result"]
    nok = sum(result["verdict"] == "NOK" for result in results)
    shift = {"name": "06:00", "start": "2024-05-01T04:00:00.000Z", "end": "2024-05-01T12:00:00.000Z", "total": 812,
             "ok": 799, "nok": 13, "errors": 0, "defect_pct": 1.6, "parts_per_min": 1.7, "since": "x"}
    publish_retained(broker.port, f"{PREFIX}/shift/06:00", shift)  # as main.py does at a shift change

    browser.get(f"{node_red}/dashboard")
    expected = {"aiv-verdict": results[-1]["verdict"], "aiv-total": str(len(results)), "aiv-ok": str(len(results) - nok),
                "aiv-nok": str(nok), "aiv-seq": str(results[-1]["seq"]), "aiv-status": "LINE OFFLINE"}
    try:
        wait_until(lambda: all(text_of(browser, key) == value for key, value in expected.items()),
                   "the dashboard to show the published verdict and counters", timeout_s=60)
        wait_until(lambda: "812" in browser.page_source, "the shift summary")
        image_sizes = wait_until(lambda: browser.execute_script(
            "const images = ['input', 'reconstruction', 'residual', 'defect']"
            ".map(kind => document.getElementById('aiv-image-' + kind));"
            "return images.every(image => image && image.complete && image.naturalWidth > 0)"
            " ? images.map(image => image.naturalWidth) : null;"), "four decoded images")
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    photo_width = cv2.imread(str(sorted(parts.iterdir())[-1]), cv2.IMREAD_UNCHANGED).shape[1]
    model_size = json.loads((tiny_run / "config.json").read_text())["input_shape"][0]
    assert photo_width != model_size  # so the check below tells the photo's pixels from the model's
    assert image_sizes == [photo_width] * 4  # pictures come at the photo's own pixels
    defect_pct = round(100 * nok / len(results), 1)
    assert text_of(browser, "aiv-defect-pct") == f"{defect_pct:.1f}"


# ---------------------------------------------------------------- the real line on a settable clock


@pytest.fixture(scope="module")
def inspector(tiny_run):
    from utils.inspector import Inspector

    return Inspector.from_run(tiny_run)


@pytest.fixture(scope="module")
def part_images(tiny_demo) -> list:
    import cv2

    return [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in sorted((tiny_demo / "test").rglob("*.png"))]


class SettableClock:
    """The line's injectable clock: returns whatever time the test set last."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class RealLine:
    """utils.line.InspectionLine as main.py runs it (real Inspector, Journal, MqttPublisher to the test broker),
    but on a settable clock: `run` sets the clock to each event's moment before the line sees the event."""

    def __init__(self, broker_port: int, inspector, journal_path: Path, *, shifts: str, started: datetime,
                 images: str = "none") -> None:
        from utils.journal import Journal
        from utils.line import InspectionLine, ShiftSchedule
        from utils.mqtt import MqttPublisher, MqttSettings

        self.clock = SettableClock(started)
        self.journal = Journal(journal_path)
        self.publisher = MqttPublisher(MqttSettings(host="127.0.0.1", port=broker_port, topic_prefix=PREFIX),
                                       self.journal)
        self.publisher.start()
        wait_until(lambda: self.publisher.connected, "the line to connect to the broker")
        self.line = InspectionLine(inspector=inspector, journal=self.journal, publisher=self.publisher,
                                   images=images, shifts=ShiftSchedule.parse(shifts), clock=self.clock,
                                   output=io.StringIO())

    def run(self, events) -> dict:
        """events: (moment, SourceItem | SourceError | None) pairs; returns the line's final stats."""

        def source():
            for moment, event in events:
                self.clock.now = moment
                yield event

        final = self.line.run(source(), threading.Event())
        assert self.publisher.wait_for_delivery(WAIT_S), "the broker did not acknowledge the journal"
        return final

    def close(self) -> None:
        """As main.py ends: deliver, publish status "offline", disconnect."""
        undelivered = self.publisher.close(timeout_s=WAIT_S)
        self.journal.close()
        assert undelivered == 0


def parts(images, moments) -> list:
    from utils.sources import SourceItem

    return [(moment, SourceItem(f"part-{index}.png", images[index % len(images)]))
            for index, moment in enumerate(moments)]


# ---------------------------------------------------------------- how the page writes times and numbers


def shown_time(moment: datetime, same_day_as: date | None = None) -> str:
    """The dashboard's way to write a moment in the browser's time zone: "HH:MM" on the day `same_day_as`,
    else "D Mon HH:MM"."""
    local = moment.astimezone(ZONE)
    if local.date() == same_day_as:
        return f"{local:%H:%M}"
    return f"{local.day} {MONTHS[local.month - 1]} {local:%H:%M}"


def one_decimal(value: float) -> str:
    """Number.prototype.toFixed(1): the float's exact value, halves rounded up."""
    return str(Decimal(value).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def wait_for_equal(read, expected, what: str, timeout_s: float = WAIT_S):
    """Poll read() until it equals `expected`; after `timeout_s` fail with pytest's diff of the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if value == expected or time.monotonic() > deadline:
            assert value == expected, f"{what}: the page shows {value!r}"
            return value
        time.sleep(0.05)  # polling interval of a condition, not a guess at how long something takes


def shift_rows(driver) -> list[dict]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#aiv-shifts tbody tr.aiv-shift')].map(row => ({"
        " cells: [...row.cells].map(cell => cell.innerText.trim()),"
        " partial: row.querySelector('.aiv-shift-partial') !== null }))")


def expected_shift_row(shift: dict) -> dict:
    """A row as the operator must read it: name, when its counts begin (the line may have started after the
    shift did: then the counts begin at `since`, marked partial), end, total, OK, NOK, defect %."""
    start, end, since = parse_iso(shift["start"]), parse_iso(shift["end"]), parse_iso(shift["since"])
    begins = max(start, since)
    return {"cells": [shift["name"], shown_time(begins, end.astimezone(ZONE).date()), shown_time(end),
                      str(shift["total"]), str(shift["ok"]), str(shift["nok"]), one_decimal(shift["defect_pct"])],
            "partial": since > start}


def test_last_shifts_table_shows_each_published_shift_newest_first(broker, node_red, browser, subscriber_factory,
                                                                   inspector, part_images, tmp_path):
    assert browser.execute_script("return Intl.DateTimeFormat().resolvedOptions().timeZone") == str(ZONE)
    shifts = subscriber_factory(broker.port, f"{PREFIX}/shift/#")
    browser.get(f"{node_red}/dashboard")
    wait_until(lambda: "no finished shift yet" in browser.page_source, "the empty shift table")

    # The tester's schedule: a line started at 05:42:17 is in the 12:00 shift of the day before, which began
    # long before the line did; then 05:43 and 05:44 end a minute apart, the 05:44 shift ends at 12:00.
    from utils.sources import SourceError

    def at(hour: int, minute: int, second: int = 0) -> datetime:
        return datetime(2024, 5, 3, hour, minute, second, tzinfo=ZONE)

    events = (parts(part_images, [at(5, 42, 30), at(5, 42, 40)]) + [(at(5, 42, 50), SourceError("bad.png", "corrupt"))]
              + parts(part_images[3:], [at(5, 43, 10), at(5, 43, 20), at(5, 43, 30), at(5, 43, 40)])
              + parts(part_images[5:], [at(5, 44, 10), at(6, 0), at(12, 0, 30)]))
    line = RealLine(broker.port, inspector, tmp_path / "line.jsonl", shifts="05:43,05:44,12:00",
                    started=at(5, 42, 17))
    try:
        line.run(events)
        published = shifts.wait_for(lambda: len(shifts.messages) == 3 and shifts.messages, "three shift summaries")
        summaries = [message.json() for message in published]
        assert [summary["name"] for summary in summaries] == ["12:00", "05:43", "05:44"]
        expected = [expected_shift_row(summary)
                    for summary in sorted(summaries, key=lambda summary: parse_iso(summary["end"]), reverse=True)]
        assert [row["cells"][0] for row in expected] == ["05:44", "05:43", "12:00"]
        assert expected[2]["cells"][1] == "05:42" and expected[2]["partial"]  # not the 2 May 12:00 it began

        wait_for_equal(lambda: shift_rows(browser), expected, "the Last shifts table, live")
        browser.refresh()
        wait_for_equal(lambda: shift_rows(browser), expected, "the Last shifts table after a reload")
    finally:
        line.close()
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard-shifts.png"))


def today_at(hour: int, minute: int, second: int = 0) -> datetime:
    today = datetime.now(ZONE).date()
    return datetime(today.year, today.month, today.day, hour, minute, second, tzinfo=ZONE)


def counters_on(driver, *keys: str) -> dict:
    return {key: text_of(driver, f"aiv-{key}") for key in keys}


def test_parts_per_minute_is_a_dash_once_the_line_is_offline(broker, node_red, browser, subscriber_factory,
                                                             inspector, part_images, tmp_path):
    stats = subscriber_factory(broker.port, f"{PREFIX}/stats")
    browser.get(f"{node_red}/dashboard")
    line = RealLine(broker.port, inspector, tmp_path / "line.jsonl", shifts="none", started=today_at(10, 0, 17))
    try:
        final = line.run(parts(part_images, [today_at(10, 0, 20), today_at(10, 0, 30), today_at(10, 0, 40)]))
        stats.wait_for(lambda: stats.last(f"{PREFIX}/stats") and stats.last(f"{PREFIX}/stats").json() == final,
                       "the final stats")
        assert final["parts_per_min"] > 0
        running = {"status": "LINE ONLINE", "total": str(final["total"]), "ppm": one_decimal(final["parts_per_min"])}
        wait_for_equal(lambda: counters_on(browser, *running), running, "the counters of the running line")
    finally:
        line.close()  # status "offline", as main.py ends; the stats stay retained with their last rate
    # The rate the line published last is no longer true; the counts are.
    stopped = {"status": "LINE OFFLINE", "total": str(final["total"]), "ppm": "\u2014"}
    wait_for_equal(lambda: counters_on(browser, *stopped), stopped, "the counters of the stopped line")
    browser.refresh()
    wait_for_equal(lambda: counters_on(browser, *stopped), stopped, "the counters of the stopped line after a reload")


def test_counters_say_since_when_they_count(broker, node_red, browser, subscriber_factory, inspector, part_images,
                                            tmp_path):
    stats = subscriber_factory(broker.port, f"{PREFIX}/stats")
    browser.get(f"{node_red}/dashboard")

    def expected(final: dict) -> dict:
        since = shown_time(parse_iso(final["since"]), datetime.now(ZONE).date())
        return {"since": f"since {since}", "total": str(final["total"])}

    def shown_after(final: dict, what: str) -> None:
        stats.wait_for(lambda: stats.last(f"{PREFIX}/stats") and stats.last(f"{PREFIX}/stats").json() == final,
                       f"the stats {what}")
        wait_for_equal(lambda: counters_on(browser, "since", "total"), expected(final), f"the counters {what}")

    line = RealLine(broker.port, inspector, tmp_path / "line.jsonl", shifts="10:30", started=today_at(10, 0, 17))
    try:
        first = line.run(parts(part_images, [today_at(10, 0, 20), today_at(10, 0, 30)]))
        assert parse_iso(first["since"]) == today_at(10, 0, 17)  # the line's start: it started mid-shift
        shown_after(first, "of the running line")
        if datetime.now(ZONE).date() == today_at(0, 0).date():  # (not if midnight just passed)
            assert text_of(browser, "aiv-since") == "since 10:00"
        # 10:30 is a shift change: the counters restart at 0, and say since when they count.
        second = line.run(parts(part_images[2:], [today_at(10, 30, 5), today_at(10, 30, 15), today_at(10, 30, 25)]))
        assert second["total"] == 3 and parse_iso(second["since"]) == today_at(10, 30)
        shown_after(second, "after the shift change")
        browser.refresh()
        shown_after(second, "after a reload")
    finally:
        line.close()


def score_columns(driver) -> list[int] | None:
    """CSS x positions of the chart canvas's columns that hold score-blue pixels below the legend."""
    return driver.execute_script("""
        const canvas = document.querySelector('.nrdb-ui-chart canvas');
        if (!canvas || !canvas.width) { return null; }
        const scale = canvas.width / canvas.clientWidth, top = Math.round(60 * scale);
        const pixels = canvas.getContext('2d').getImageData(0, top, canvas.width, canvas.height - top).data;
        const [r, g, b] = arguments[0], columns = new Set();
        for (let i = 0; i < pixels.length; i += 4) {
            if (pixels[i + 3] > 200 && Math.abs(pixels[i] - r) < 60 && Math.abs(pixels[i + 1] - g) < 40
                && Math.abs(pixels[i + 2] - b) < 40) { columns.add(Math.floor((i / 4) % canvas.width / scale)); }
        }
        return [...columns].sort((a, b) => a - b);""", list(SCORE_BLUE))


def drawn_runs(columns: list[int] | None, min_gap_px: int = 20) -> list[tuple[int, int]]:
    """Stretches of x where the score is drawn, split where no score pixel is for more than `min_gap_px`."""
    runs: list[tuple[int, int]] = []
    for x in columns or []:
        if runs and x - runs[-1][1] <= min_gap_px:
            runs[-1] = (runs[-1][0], x)
        else:
            runs.append((x, x))
    return runs


def test_score_chart_breaks_its_line_across_a_restart_and_a_long_pause(broker, node_red, browser, inspector,
                                                                       part_images, tmp_path):
    """Also the overview screenshot: the second run changes shifts twice and publishes its images."""
    start = datetime.now(ZONE).replace(second=0, microsecond=0) - timedelta(minutes=17)

    def seconds(offset: float) -> datetime:
        return start + timedelta(seconds=offset)

    shifts = ",".join(f"{seconds(offset):%H:%M}" for offset in (-60, 600, 840))
    browser.get(f"{node_red}/dashboard")

    first = RealLine(broker.port, inspector, tmp_path / "line.jsonl", shifts=shifts, started=seconds(-1))
    first.run(parts(part_images, [seconds(offset) for offset in (0, 5, 10, 15)]))
    first.close()  # status "offline"
    # A restart 285 s later (less than a long pause: only the restart breaks the line), then, without any
    # restart, a pause of 385 s; after it, parts up to 60 s apart make one stretch.
    second = RealLine(broker.port, inspector, tmp_path / "line.jsonl", shifts=shifts, started=seconds(299),
                      images="all")
    try:
        offsets = (300, 305, 310, 315, 700, 705, 710, 760, 820, 880, 900, 905, 910, 915)
        second.run(parts(part_images[4:], [seconds(offset) for offset in offsets]))
        last_seq = str(second.journal.last_seq)
        wait_until(lambda: text_of(browser, "aiv-seq") == last_seq, "the last part on the page")
        for when in ("live", "after a reload"):
            if when != "live":
                browser.refresh()
            try:
                wait_until(lambda: len(drawn_runs(score_columns(browser))) == 3,
                           f"three separately drawn runs of the score, {when}", timeout_s=15)
                assert len(drawn_runs(score_columns(browser))) == 3
            except AssertionError:
                runs = drawn_runs(score_columns(browser))
                pytest.fail(f"the score line {when} is drawn over {runs} (x px): it must break at the restart "
                            "and at the long pause, and only there: three stretches")
        wait_until(lambda: len(shift_rows(browser)) == 2 and browser.execute_script(
            "const image = document.getElementById('aiv-image-defect');"
            "return image && image.complete && image.naturalWidth > 0"), "the shifts and images on the page")
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard-chart.png"))
        second.close()
