"""The shipped dashboard in a real browser: Mosquitto + Node-RED with dashboard/flows.json + main.py + headless
Chromium. The page must show what the line published: the latest verdict, the counters, the four images and a
shift summary. A screenshot is saved to tests/artifacts/dashboard.png.

Needs Node.js, `npm ci` in dashboard/, Chromium with its driver (Debian: chromium, chromium-driver) and the
selenium package; without them the test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import paho.mqtt.client as mqtt
import pytest

from tests.line_fixtures import (PROJECT_ROOT, WAIT_S, broker, free_port, main_py_command,  # noqa: F401
                                 port_accepts, read_journal, wait_until)

PREFIX = "plant/line7"
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
    size = json.loads((tiny_run / "config.json").read_text())["input_shape"][0]
    assert image_sizes == [size] * 4
    defect_pct = round(100 * nok / len(results), 1)
    assert text_of(browser, "aiv-defect-pct") == f"{defect_pct:.1f}"
