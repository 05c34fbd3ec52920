"""`pcae demo` as a person uses it: the page served by a real `pcae demo` process, driven by a real
headless browser (Debian's chromium and chromium-driver, through Selenium; offline).

Skipped, with the reason, when the demo extra (gradio), selenium, the browser or a portrait model
is missing. The model is the one shipped with pcae (pcae/data/portrait), or PCAE_DEMO_CHECKPOINT.
PCAE_DEMO_SCREENSHOT=PATH also saves the portraits tab, answered, to PATH (docs/demo.png).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "pcae" / "data" / "portrait"
FACE = ROOT / "pcae" / "data" / "faces" / "orl" / "s01" / "1.png"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ANSWER_S = 60  # a 16-portrait answer takes a few seconds on 2 cores; the rest is slack for a busy CI

pytest.importorskip("gradio", reason="the demo extra is not installed: pip install -e '.[demo]'")
pytest.importorskip("selenium", reason="selenium is not installed: pip install -e '.[test]'")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("no browser: apt-get install chromium chromium-driver (for /usr/bin/chromium and "
                "/usr/bin/chromedriver)", allow_module_level=True)
MODEL = Path(os.environ.get("PCAE_DEMO_CHECKPOINT") or SHIPPED)
if not (MODEL / "model.safetensors").exists() and not MODEL.is_file():
    pytest.skip(f"no portrait model: {SHIPPED / 'model.safetensors'} is absent (set PCAE_DEMO_CHECKPOINT to "
                "a portrait checkpoint to run these tests with it)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A `pcae demo` process on a free port, started in an empty folder: no runs/ there, so its default
    model is the shipped one."""
    cwd = tmp_path_factory.mktemp("demo")
    port = free_port()
    log = open(cwd / "demo.log", "w+")
    start = time.perf_counter()
    model = ["--checkpoint", str(MODEL)] if MODEL != SHIPPED else []  # else the default: the shipped model
    proc = subprocess.Popen([sys.executable, "-m", "pcae", "demo", "--port", str(port), *model],
                            cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = None
    while time.perf_counter() - start < 60 and proc.poll() is None:
        text = (cwd / "demo.log").read_text()
        if "serving on " in text:
            url = text.split("serving on ", 1)[1].split()[0]
            break
        time.sleep(0.2)
    if url is None:
        proc.kill()
        pytest.fail(f"pcae demo did not start in 60 s:\n{(cwd / 'demo.log').read_text()}")
    print(f"pcae demo serving in {time.perf_counter() - start:.1f} s")
    yield url, proc, cwd
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1700", "--hide-scrollbars"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    except Exception as e:  # a browser that is installed but cannot start here
        pytest.skip(f"chromium did not start: {str(e).splitlines()[0]}")
    yield driver
    driver.quit()


def draw(browser, url: str, photo: Path, wait_for):
    """Open the page, upload `photo` in the portraits tab, press the button; wait_for(figures text)."""
    browser.get(url)
    wait = WebDriverWait(browser, ANSWER_S)
    upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#portrait-photo input[type=file]"))
    upload.send_keys(str(photo))
    wait.until(lambda d: photo.name in "".join(d.find_element(By.ID, "portrait-photo").text.split()))  # uploaded
    browser.find_element(By.ID, "portrait-go").click()
    start = time.perf_counter()
    text = wait.until(lambda d: (lambda t: t if wait_for(t) else None)(d.find_element(By.ID, "portrait-figures").text))
    return text, time.perf_counter() - start


def test_a_face_photo_gets_its_crop_portraits_and_figures(server, browser):
    url, proc, _ = server
    text, seconds = draw(browser, url, FACE, lambda t: "dlib distance" in t or "Error" in t)
    assert "Error" not in text, text
    for words in ("model:", "16 portraits of", "dlib distance to the photo's face", "diversity:"):
        assert words in text, (words, text)
    pictures = {}
    for name in ("portrait-grid", "portrait-crop"):
        img = WebDriverWait(browser, 20).until(lambda d: d.find_element(By.CSS_SELECTOR, f"#{name} img"))
        WebDriverWait(browser, 20).until(lambda d: d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", img))
        pictures[name] = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
    assert pictures["portrait-grid"][0] > pictures["portrait-crop"][0] > 0, pictures
    link = browser.find_element(By.CSS_SELECTOR, "#portrait-download a")
    href = link.get_attribute("href") or ""
    assert href.endswith(".png"), href
    assert urllib.request.urlopen(href, timeout=10).read(8) == b"\x89PNG\r\n\x1a\n"  # the download is the grid
    print(f"16 portraits on the page {seconds:.1f} s after the click")
    shot = os.environ.get("PCAE_DEMO_SCREENSHOT")
    if shot:
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1280, min(max(height, 900), 2400))
        time.sleep(0.5)
        browser.save_screenshot(shot)
    assert proc.poll() is None


def test_a_photo_without_a_face_gets_a_message_and_the_server_goes_on(server, browser, tmp_path):
    import numpy as np
    from PIL import Image

    url, proc, _ = server
    plain = tmp_path / "landscape.png"
    ramp = np.linspace(0, 255, 320, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(ramp, (240, 1))] * 3, axis=-1)).save(plain)
    text, _ = draw(browser, url, plain, lambda t: "Error" in t or "dlib" in t)
    assert "no face found in landscape.png" in text, text
    assert "/tmp" not in text and str(tmp_path) not in text  # it names the upload, not the server's copy
    assert proc.poll() is None
    assert urllib.request.urlopen(url, timeout=10).status == 200
