"""The browser page, in a real browser: Debian's Chromium, headless, driven by Selenium through
its matching chromedriver, with a fake microphone that plays real recordings.

`UPDATE_SCREENSHOTS=1` also writes the README's screenshots, docs/web-ui.png (desktop) and
docs/web-ui-phone.png (390 px wide).
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

from model.audio import load_audio

from conftest import DATA, REPO, needs_data, require_data, run_server

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run "
    "installs them)",
)

WAIT = 60  # seconds: the longest any condition below may take; each wait ends as soon as it holds
RECORDING = DATA / "fsdd" / "recordings" / "7_jackson_0.wav"  # real speech, from the FSDD test split
DIGITS = ["7_jackson_0.wav", "3_theo_1.wav", "9_nicolas_2.wav"]  # three speakers of the FSDD test split
SCREENSHOT = REPO / "docs" / "web-ui.png"
PHONE_SCREENSHOT = REPO / "docs" / "web-ui-phone.png"
PHONE_WIDTH = 390


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
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--window-size={width},{height}",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
    ):
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


def live_session(driver, until_seconds: float, while_recording=None, until=None) -> None:
    """Start, let `until_seconds` of microphone audio go to the server (and, if given, wait until
    `until(driver)` holds), Stop, wait for the last final; `while_recording(driver)` is called once
    the session listens."""
    element(driver, "start").click()
    wait_for(driver, lambda d: element(d, "live").get_attribute("data-state") == "listening", "the stream to open")
    if while_recording is not None:
        while_recording(driver)
    wait_for(
        driver,
        lambda d: float(element(d, "live").get_attribute("data-sent-seconds")) >= until_seconds,
        f"{until_seconds:.1f} s of audio sent",
    )
    if until is not None:
        wait_for(driver, until, "the condition to stop on")
    element(driver, "stop").click()
    wait_for(driver, lambda d: element(d, "live").get_attribute("data-state") == "stopped", "the stream's end")


def transcribe_file(driver, path: Path, decoder: str) -> None:
    from selenium.webdriver.support.ui import Select

    element(driver, "file-input").send_keys(str(path))
    Select(element(driver, "decoder")).select_by_value(decoder)
    wait_for(driver, lambda d: element(d, "transcribe").is_enabled(), "the file to be chosen")
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
            assert not element(driver, "key-panel").is_displayed(), "no key card where no key is needed"
            options = element(driver, "model").find_elements("tag name", "option")
            assert [option.get_attribute("value") for option in options] == ["digits"]
            assert not element(driver, "recording").is_displayed()

            def recording(d):
                assert element(d, "recording").is_displayed() and element(d, "model").get_attribute("disabled")

            live_session(driver, until_seconds=expected["duration"] + 0.5, while_recording=recording)
            assert element(driver, "live-error").get_attribute("hidden"), element(driver, "live-error").text
            assert not element(driver, "recording").is_displayed()
            assert float(element(driver, "level").get_attribute("data-peak")) > 0.05, "the meter saw the speech"
            segments = driver.find_elements("css selector", "#finals .segment")
            texts = [segment.find_element("class name", "text").text for segment in segments]
            assert " ".join(texts) == expected["text"]
            assert len(segments) == len(DIGITS), "each pause ends a segment"
            times = [segment.find_element("class name", "time").text for segment in segments]
            assert times == sorted(times) and all("–" in time for time in times)

            # Start again (the fake microphone plays its file again): the transcript stays, and what
            # comes is added after it, its times after the first session's audio.
            # Stop once a new final shows: on a loaded machine the replayed file's first digit may
            # reach the server later than a fixed number of seconds.
            def added(d):
                return len(d.find_elements("css selector", "#finals .segment")) > len(texts)

            live_session(driver, until_seconds=1.5, until=added)
            again = driver.find_elements("css selector", "#finals .segment")
            assert [s.find_element("class name", "text").text for s in again][: len(texts)] == texts
            assert len(again) > len(texts), "the second session's speech is added"
            later = [s.find_element("class name", "time").text for s in again]
            assert later == sorted(later) and later[len(texts)] >= times[-1]
            texts = [s.find_element("class name", "text").text for s in again]
            downloads = tmp_path / "downloads"
            downloads.mkdir()
            driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
            driver.find_element("css selector", '.tools[data-for="live"] [data-action="txt"]').click()
            wait_for(driver, lambda d: (downloads / "transcript.txt").exists(), "the download")
            assert (downloads / "transcript.txt").read_text().split("\n")[:-1] == texts

            transcribe_file(driver, digit_recording, "")  # the server's default decoder
            assert element(driver, "file-error").get_attribute("hidden"), element(driver, "file-error").text
            assert element(driver, "file-text").text == expected["text"]
            rows = driver.find_elements("css selector", "#words tbody tr")
            assert [row.find_elements("tag name", "td")[0].text for row in rows] == expected["text"].split()
            assert [float(row.find_elements("tag name", "td")[1].text) for row in rows] == [
                round(word["start"], 2) for word in expected["words"]
            ]

            driver.save_screenshot(str(tmp_path / "web-ui.png"))

            # A phone's screen (headless windows are at least 500 px wide; emulation goes narrower):
            # nothing is wider than it.
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": PHONE_WIDTH, "height": 1400, "deviceScaleFactor": 1, "mobile": True},
            )
            assert driver.execute_script("return window.innerWidth") == PHONE_WIDTH
            assert driver.execute_script("return document.documentElement.scrollWidth") <= PHONE_WIDTH
            for control in ("start", "stop", "clear", "model", "decoder", "hotwords", "phrases", "transcribe"):
                assert element(driver, control).is_displayed(), control
                box = element(driver, control).rect
                assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE_WIDTH, control
            for field in ("hotwords", "phrases"):  # its hint is not cut
                assert driver.execute_script(
                    "const f = arguments[0]; f.value = f.placeholder; const fits = "
                    "f.scrollWidth <= f.clientWidth; f.value = ''; return fits;",
                    element(driver, field),
                ), field
            driver.save_screenshot(str(tmp_path / "web-ui-phone.png"))
            if os.environ.get("UPDATE_SCREENSHOTS"):
                SCREENSHOT.parent.mkdir(exist_ok=True)
                shutil.copyfile(tmp_path / "web-ui.png", SCREENSHOT)
                shutil.copyfile(tmp_path / "web-ui-phone.png", PHONE_SCREENSHOT)
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

            element(driver, "clear").click()
            assert not driver.find_elements("css selector", "#finals .segment")
            assert element(driver, "clear").get_attribute("disabled")
        finally:
            driver.quit()


@needs_chromium
@needs_data("realspeech")
def test_options_exports_and_unsure_words(digit_recording, tmp_path):
    """The options reach the server (the page shows /transcribe's answer for the same options, its
    alternatives included), the downloads are the server's own subtitles, and unsure words are
    marked without hovering."""
    from selenium.webdriver.support.ui import Select

    english = (
        DATA
        / "realspeech"
        / "audio"
        / "pocketsphinx"
        / "test"
        / "data"
        / "librivox"
        / "sense_and_sensibility_01_austen_64kb-0880.wav"
    )  # not digits: the model hesitates between answers
    with run_server(None, "--min-confidence", "0.96", log_dir=tmp_path) as server:
        fields = {"decoder": "beam", "alternatives": "3", "hotwords": "nine"}

        def answer(path: Path, endpoint: str = "/transcribe", **more) -> httpx.Response:
            data = {**fields, **more}
            if endpoint != "/transcribe":  # OpenAI's formats have no place for alternatives: the same search without
                del data["alternatives"]
            with open(path, "rb") as audio:
                return httpx.post(server.url + endpoint, files={"file": audio}, data=data, timeout=60)

        hesitant = answer(english).json()
        expected = answer(digit_recording).json()
        subtitles = answer(digit_recording, "/v1/audio/transcriptions", response_format="srt").text
        unsure = [word["word"] for word in expected["words"] if word["low_confidence"]]
        assert 0 < len(unsure) < len(expected["words"]) and len(hesitant["alternatives"]) > 1
        driver = browser(tmp_path)
        try:
            open_page(driver, server)
            Select(element(driver, "alternatives")).select_by_value("3")
            element(driver, "hotwords").send_keys("nine")
            transcribe_file(driver, english, "beam")
            assert element(driver, "file-text").text == hesitant["text"]
            shown = [item.text for item in driver.find_elements("css selector", "#file-alternatives li")]
            assert shown == [alternative["text"] or "(nothing)" for alternative in hesitant["alternatives"][1:]]

            Select(element(driver, "alternatives")).select_by_value("")  # none asked: the list above goes
            transcribe_file(driver, digit_recording, "beam")
            assert element(driver, "file-error").get_attribute("hidden"), element(driver, "file-error").text
            assert element(driver, "file-text").text == expected["text"]
            assert not element(driver, "file-alternatives").is_displayed(), "no alternatives asked: none shown"
            marked = driver.find_elements("css selector", "#file-text .word.low")
            assert [word.text for word in marked] == unsure
            style = driver.execute_script("return getComputedStyle(arguments[0]).textDecorationLine", marked[0])
            assert "underline" in style, "marked for everyone, not only on hover"
            sure = driver.find_element("css selector", "#file-text .word:not(.low)")
            assert "underline" not in driver.execute_script(
                "return getComputedStyle(arguments[0]).textDecorationLine", sure
            )

            downloads = tmp_path / "downloads"
            downloads.mkdir()
            driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
            for kind in ("srt", "json"):
                driver.find_element("css selector", f'.tools[data-for="file"] [data-action="{kind}"]').click()
                wait_for(driver, lambda d, kind=kind: (downloads / f"digits.{kind}").exists(), f"the {kind} download")
            assert (downloads / "digits.srt").read_text() == subtitles
            saved = json.loads((downloads / "digits.json").read_text())
            assert saved["text"] == expected["text"] and saved["model"] == "digits"
            assert [w["word"] for s in saved["segments"] for w in s["words"]] == expected["text"].split()

            driver.execute_cdp_cmd(
                "Browser.grantPermissions", {"permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}
            )
            driver.find_element("css selector", '.tools[data-for="file"] [data-action="copy"]').click()
            wait_for(
                driver,
                lambda d: "copied" in d.find_element("css selector", '.tools[data-for="file"] .tool-state').text,
                "the copy",
            )
            copied = driver.execute_async_script("navigator.clipboard.readText().then(arguments[0])")
            assert copied.split() == expected["text"].split()
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
            assert element(driver, "key-panel").is_displayed()
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
                    await asyncio.to_thread(
                        wait_for,
                        driver,
                        lambda d: element(d, "live").get_attribute("data-state") == "stopped",
                        "the refusal",
                    )

            asyncio.run(while_the_only_stream_is_taken())
            assert (
                "busy" in element(driver, "live-error").text
                and "at most 1 streams" in element(driver, "live-error").text
            )

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
        for name in ("app.js", "export.js", "capture-worklet.js", "style.css"):
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
        assert (
            final["type"] == "final"
            and final["text"]
            == httpx.post(
                server.url + "/transcribe",
                files={"file": RECORDING.read_bytes()},
                data={"decoder": "greedy"},
                headers={"authorization": "Bearer k1"},
            ).json()["text"]
        )
        for config, headers in (
            ({**base, "api_key": "k2"}, None),
            (base, None),
            ({**base, "api_key": "k1"}, {"authorization": "Bearer wrong"}),
        ):
            (error,) = asyncio.run(attempt(config, headers))
            assert error["error"] == "invalid_api_key", (config, headers)
