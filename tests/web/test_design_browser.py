"""The Design tab in a real browser: headless Chromium (Debian's) driven by Playwright.

Draws a rough sneaker outline with mouse strokes on the sketch pad, refines it as class
Sneaker with the zoo DDPM, saves it to the design board, downloads the board and checks the
zip (a PNG and a recipe naming Sneaker), and saves a screenshot to
test-artifacts/web_design.png.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from fashiongen.web.studio import zoo_models

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TIMEOUT_MS = 120_000
ZOO_MODEL = "ddpm"
# A sneaker's side view on the 280x280 pad, as fractions of the pad: sole, toe, heel, collar.
OUTLINE = [
    (0.1, 0.7),
    (0.9, 0.7),
    (0.9, 0.6),
    (0.6, 0.45),
    (0.45, 0.35),
    (0.3, 0.4),
    (0.12, 0.4),
    (0.1, 0.7),
]
STEPS_PER_STROKE = 8

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(ZOO_MODEL not in zoo_models(), reason="the zoo ddpm is not installed"),
]  # and the `browser` fixture (conftest.py) skips without Chromium


def draw_outline(page, canvas) -> None:
    """Mouse strokes along OUTLINE, inside the square pad centred in the editor's canvas."""
    box = canvas.bounding_box()
    side = 0.9 * min(box["width"], box["height"])
    left = box["x"] + (box["width"] - side) / 2
    top = box["y"] + (box["height"] - side) / 2
    points = [(left + fx * side, top + fy * side) for fx, fy in OUTLINE]
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*point, steps=STEPS_PER_STROKE)
    page.mouse.up()


def test_sketch_refine_save_and_download_the_board(browser, server, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 1400}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    # Not "networkidle": Gradio's client keeps an event stream open for the session
    # (GET /gradio_api/heartbeat/<session>, opened at start-up and on each event, one
    # "ALIVE" every 15 s), so the network is never idle. The page is ready when the tab
    # is there, which the click waits for.
    page.goto(server.url, wait_until="load")
    page.get_by_role("tab", name="Design").wait_for(state="visible")
    page.get_by_role("tab", name="Design").click()
    assert page.get_by_label("Design model").input_value() == ZOO_MODEL

    canvas = page.locator("#sketch canvas").first
    canvas.wait_for(state="visible")
    draw_outline(page, canvas)
    page.get_by_label("Design class").click()
    page.get_by_role("option", name="Sneaker", exact=True).click()
    page.locator("#refine").click()
    page.wait_for_function(
        "document.querySelector('#design img')?.complete && "
        "document.querySelector('#design img').naturalWidth > 0"
    )
    page.get_by_text("Input:").wait_for()

    page.locator("#save").click()
    page.locator("#board img").first.wait_for(state="visible")
    with page.expect_download() as download_info:
        page.locator("#download-board").click()
    path = tmp_path / "board.zip"
    download_info.value.save_as(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("recipe.json"))
    assert "design-001.png" in names
    (entry,) = manifest["designs"]
    assert entry["recipe"]["class_name"] == "Sneaker"
    assert entry["recipe"]["model"] == ZOO_MODEL

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_design.png"), full_page=True)
    context.close()
