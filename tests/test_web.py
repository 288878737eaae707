"""The browser page, in a real browser: Debian's Chromium, headless, driven by Selenium through
its matching chromedriver, with a fake microphone that plays real recordings.

`UPDATE_SCREENSHOTS=1` also writes the README's screenshot, docs/web-ui.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
import websockets

from conftest import DATA, REPO, needs_data, require_data, run_server
from model.audio import load_audio

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run "
           "installs them)")

WAIT = 60  # seconds: the longest any condition below may take; each wait ends as soon as it holds
RECORDING = DATA / "fsdd" / "recordings" / "7_jackson_0.wav"  # real speech, from the FSDD test split
DIGITS = ["7_jackson_0.wav", "3_theo_1.wav", "9_nicolas_2.wav"]  # three speakers of the FSDD test split
SCREENSHOT = REPO / "docs" / "web-ui.png"


@pytest.fixture(scope="module")
def digit_recording(tmp_path_factory) -> Path:
    """Real recordings of three digits, 1.2 s apart, as one 8 kHz wav for the fake microphone."""
    require_data("fsdd")
    rate = 8000
    pause = np.zeros(int(1.2 * rate), dtype=np.float32)
    parts = [np.zeros(int(0.3 * rate), dtype=np.float32)]
    for name in DIGITS:
        parts += [load_audio(DATA / "fsdd" / "recordings" / name, rate), pause]
    path = tmp_path_factory.mktemp("speech") / "digits.wav"
    soundfile.write(path, np.concatenate(parts), rate, subtype="PCM_16")
    return path


def browser(tmp_path: Path, microphone: Path | None = None, width: int = 1000, height: int = 1120):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--window-size={width},{height}",
                     "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                     "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(argument)
    if microphone is not None:  # played once, not looped
        options.add_argument(f"--use-file-for-fake-audio-capture={microphone}%noloop")
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def wait_for(driver, condition, what: str):
    """Wait until `condition(driver)` is truthy; on timeout, say what was awaited and what the page shows."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition)
    except TimeoutException:
        page = driver.find_element("tag name", "main").text
        raise AssertionError(f"timed out waiting for {what}; the page shows:\n{page}") from None


def element(driver, element_id: str):
    return driver.find_element("id", element_id)


def open_page(driver, server) -> None:
    driver.get(server.url + "/")
    wait_for(driver, lambda d: element(d, "start").is_enabled(), "the page to learn the model")


def live_session(driver, until_seconds: float) -> None:
    """Start, let `until_seconds` of microphone audio go to the server, Stop, wait for the last final."""
    element(driver, "start").click()
    wait_for(driver, lambda d: float(element(d, "live").get_attribute("data-sent-seconds")) >= until_seconds,
             f"{until_seconds:.1f} s of audio sent")
    element(driver, "stop").click()
    wait_for(driver, lambda d: element(d, "live").get_attribute("data-state") == "stopped", "the stream's end")


def transcribe_file(driver, path: Path, decoder: str) -> None:
    from selenium.webdriver.support.ui import Select

    element(driver, "file-input").send_keys(str(path))
    Select(element(driver, "decoder")).select_by_value(decoder)
    element(driver, "transcribe").click()
    wait_for(driver, lambda d: element(d, "file").get_attribute("data-state") == "done", "the file's transcript")


@needs_chromium
def test_microphone_and_file_give_the_servers_transcript(digit_recording, tmp_path):
    """The default model (models/digits, beam search with its LM), as the page is meant to be tried.
    The page's audio reaches the server through the browser's resampling and the page's own, so its
    samples are close to the file's, not equal: a trained model gives the same words for both."""
    with run_server(None, log_dir=tmp_path) as server:
        with open(digit_recording, "rb") as audio:
            expected = httpx.post(server.url + "/transcribe", files={"file": audio}, timeout=60).json()
        assert len(expected["text"].split()) == len(DIGITS), expected["text"]
        driver = browser(tmp_path, microphone=digit_recording)
        try:
            open_page(driver, server)
            assert "Model digits" in element(driver, "status").text
            live_session(driver, until_seconds=expected["duration"] + 0.5)
            assert element(driver, "live-error").get_attribute("hidden"), element(driver, "live-error").text
            segments = driver.find_elements("css selector", "#finals .segment")
            texts = [segment.find_element("class name", "text").text for segment in segments]
            assert " ".join(texts) == expected["text"]
            assert len(segments) == len(DIGITS), "each pause ends a segment"
            times = [segment.find_element("class name", "time").text for segment in segments]
            assert times == sorted(times) and all("–" in time for time in times)

            transcribe_file(driver, digit_recording, "")  # the server's default decoder
            assert element(driver, "file-error").get_attribute("hidden"), element(driver, "file-error").text
            assert element(driver, "file-text").text == expected["text"]
            rows = driver.find_elements("css selector", "#words tbody tr")
            assert [row.find_elements("tag name", "td")[0].text for row in rows] == expected["text"].split()
            assert [float(row.find_elements("tag name", "td")[1].text) for row in rows] == \
                [round(word["start"], 2) for word in expected["words"]]

            driver.save_screenshot(str(tmp_path / "web-ui.png"))
            if os.environ.get("UPDATE_SCREENSHOTS"):
                SCREENSHOT.parent.mkdir(exist_ok=True)
                shutil.copyfile(tmp_path / "web-ui.png", SCREENSHOT)

            # A phone's screen (headless windows are at least 500 px wide; emulation goes narrower):
            # nothing is wider than it.
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": True})
            assert driver.execute_script("return window.innerWidth") == 360
            assert driver.execute_script("return document.documentElement.scrollWidth") <= 360
            assert element(driver, "start").is_displayed() and element(driver, "transcribe").is_displayed()
        finally:
            driver.quit()


@needs_chromium
@needs_data("fsdd")
def test_errors_are_shown_in_words(family, request, tmp_path):
    """A wrong key on both panels, then a server with all its streams taken; the right key works."""
    if family != "base":
        pytest.skip("one model family is enough for the page's errors")
    exported_folder = request.getfixturevalue("exported_folder")
    with run_server(exported_folder, "--api-keys", "right-key", "--max-streams", "1", log_dir=tmp_path) as server:
        driver = browser(tmp_path, microphone=RECORDING)
        try:
            open_page(driver, server)
            assert "needs an API key" in element(driver, "status").text
            element(driver, "api-key").send_keys("wrong-key")
            element(driver, "start").click()
            wait_for(driver, lambda d: element(d, "live").get_attribute("data-state") == "stopped", "the refusal")
            assert "refused the API key" in element(driver, "live-error").text
            transcribe_file(driver, RECORDING, "greedy")
            assert "refused the API key" in element(driver, "file-error").text
            assert element(driver, "file-text").text == ""

            element(driver, "api-key").clear()
            element(driver, "api-key").send_keys("right-key")
            transcribe_file(driver, RECORDING, "greedy")
            assert element(driver, "file-error").get_attribute("hidden")
            assert element(driver, "file-text").text

            async def while_the_only_stream_is_taken():
                url = server.url.replace("http", "ws") + "/v1/stream"
                async with websockets.connect(url, additional_headers={"authorization": "Bearer right-key"}) as taken:
                    await taken.send(json.dumps({"endpointing": False}))
                    await asyncio.to_thread(element(driver, "start").click)
                    await asyncio.to_thread(wait_for, driver, lambda d: element(d, "live").get_attribute(
                        "data-state") == "stopped", "the refusal")

            asyncio.run(while_the_only_stream_is_taken())
            assert "busy" in element(driver, "live-error").text and "at most 1 streams" in \
                element(driver, "live-error").text

            live_session(driver, until_seconds=1.0)  # the stream is free again and the key is right
            assert element(driver, "live-error").get_attribute("hidden"), element(driver, "live-error").text
            # The random test model hears letters, not words, in speech: but the recording reached it.
            segments = driver.find_elements("css selector", "#finals .segment .text")
            assert segments and all(segment.text for segment in segments)
        finally:
            driver.quit()


def test_no_web_ui_turns_the_page_off(family, request, tmp_path):
    if family != "base":
        pytest.skip("one model family is enough")
    exported_folder = request.getfixturevalue("exported_folder")
    with run_server(exported_folder, "--no-web-ui", log_dir=tmp_path) as server:
        assert httpx.get(server.url + "/").status_code == 404
        assert httpx.get(server.url + "/web/app.js").status_code == 404
    with run_server(exported_folder, log_dir=tmp_path, env={"ASR_WEB_UI": "false"}) as server:
        assert httpx.get(server.url + "/").status_code == 404
    with run_server(exported_folder, log_dir=tmp_path) as server:
        page = httpx.get(server.url + "/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for name in ("app.js", "capture-worklet.js", "style.css"):
            assert httpx.get(f"{server.url}/web/{name}").status_code == 200, name
        # Everything the page loads comes from this server: no CDN, nothing fetched from elsewhere.
        assert "http://" not in page.text and "https://" not in page.text
        assert httpx.get(server.url + "/web/config.json").json()["sample_rate"] == 16000


@needs_data("fsdd")
def test_the_pages_key_goes_in_the_stream_config(family, request, tmp_path):
    """What the page does when keys are on: no header, the key in the config. A header, when sent,
    is the only key read."""
    if family != "base":
        pytest.skip("one model family is enough")
    exported_folder = request.getfixturevalue("exported_folder")
    with run_server(exported_folder, "--api-keys", "k1", log_dir=tmp_path) as server:
        url = server.url.replace("http", "ws") + "/v1/stream"
        speech = (np.clip(load_audio(RECORDING, 16000), -1, 1) * 32767).astype("<i2").tobytes()

        async def attempt(config: dict, headers: dict | None = None) -> list[dict]:
            async with websockets.connect(url, additional_headers=headers) as socket:
                try:  # a refused stream may be closed before all of this is sent
                    await socket.send(json.dumps(config))
                    await socket.send(speech)
                    await socket.send(json.dumps({"type": "eof"}))
                except websockets.ConnectionClosed:
                    pass
                messages = []
                try:
                    async for message in socket:
                        messages.append(json.loads(message))
                except websockets.ConnectionClosedError:  # refused: closed with 1008
                    pass
                return messages

        base = {"endpointing": False, "decoder": "greedy"}
        (final,) = asyncio.run(attempt({**base, "api_key": "k1"}))
        assert final["type"] == "final" and final["text"] == httpx.post(
            server.url + "/transcribe", files={"file": RECORDING.read_bytes()}, data={"decoder": "greedy"},
            headers={"authorization": "Bearer k1"}).json()["text"]
        for config, headers in (({**base, "api_key": "k2"}, None), (base, None),
                                ({**base, "api_key": "k1"}, {"authorization": "Bearer wrong"})):
            (error,) = asyncio.run(attempt(config, headers))
            assert error["error"] == "invalid_api_key", (config, headers)
