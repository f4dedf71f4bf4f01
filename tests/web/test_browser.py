"""The studio in a real browser: headless Chromium (Debian's) driven by Playwright.

Picks the class Sneaker, generates, checks the grid's pixel size, draws an interpolation
strip, saves a screenshot to test-artifacts/web_studio.png, and asserts that neither the
page nor the server contacted any host but this machine (the offline guarantee).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fashiongen.web.studio import grid_size, zoo_models

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
NOT_NETWORK = {"data", "blob", "about"}  # URL schemes a page may request without a network
TIMEOUT_MS = 60_000
NUM_IMAGES = 16
NUM_FRAMES = 8  # the page's default, seeds 0..7
IMAGE_SHAPE = (1, 28, 28)
ZOO_MODEL = "ddpm"

pytestmark = pytest.mark.slow  # the `browser` fixture (conftest.py) skips without Chromium


def test_generate_sneakers_offline(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    # Not "networkidle": Gradio keeps a heartbeat event stream open for the session
    # (/gradio_api/heartbeat/<session>, since the page gained the Design tab), so the
    # network is never idle. Requests are logged as they start, so none escapes the check.
    page.goto(server.url, wait_until="load")
    page.locator("#generate").wait_for(state="visible")
    assert page.title() == "fashiongen studio"
    if ZOO_MODEL in zoo_models():  # a trained model makes the screenshot worth looking at
        page.get_by_label("Model").click()
        page.get_by_role("option", name=ZOO_MODEL, exact=True).click()
        page.get_by_text(re.compile(f"^{ZOO_MODEL}, step")).wait_for()

    page.get_by_label("Class").click()
    page.get_by_role("option", name="Sneaker", exact=True).click()
    assert page.get_by_label("Class").input_value() == "Sneaker"
    page.locator("#generate").click()

    image = page.locator("#grid img")
    image.wait_for(state="visible")
    page.wait_for_function(
        "document.querySelector('#grid img')?.complete && "
        "document.querySelector('#grid img').naturalWidth > 0"
    )
    size = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert tuple(size) == grid_size(NUM_IMAGES, IMAGE_SHAPE)  # 4x4 tiles of 28+2 px, x2

    page.locator("#interpolate").click()
    strip = page.locator("#strip img")
    strip.wait_for(state="visible")
    page.wait_for_function(
        "document.querySelector('#strip img')?.complete && "
        "document.querySelector('#strip img').naturalWidth > 0"
    )
    size = strip.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert tuple(size) == grid_size(NUM_FRAMES, IMAGE_SHAPE, num_rows=1)
    # The note says whether the strip interpolates latents or shows seeds A..B (no latents).
    page.get_by_text(re.compile("Spherical interpolation|independent samples")).wait_for()

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_studio.png"), full_page=True)
    context.close()

    assert requests, "the page made no requests at all"
    off_machine = [
        url
        for url in requests
        if urlsplit(url).scheme not in NOT_NETWORK and urlsplit(url).hostname not in LOCAL_HOSTS
    ]
    assert not off_machine, f"the page requested other hosts: {off_machine[:5]}"
    assert server.hosts_contacted() <= LOCAL_HOSTS, (
        f"the server contacted other hosts: {server.hosts_contacted() - LOCAL_HOSTS}"
    )
