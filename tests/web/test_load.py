"""Reliability of the served studio: concurrent requests, refused inputs, a responsive page.

Talks to the server's API routes with `gradio_client` (Gradio's own client) on 127.0.0.1,
with its analytics off; every loop is bounded in count and time.
"""

from __future__ import annotations

import time

import pytest
from PIL import Image

from fashiongen.web.studio import MAX_IMAGES, MAX_STEPS, grid_size

pytestmark = pytest.mark.slow

NUM_CONCURRENT = 20
REQUEST_TIMEOUT_S = 180
PAGE_TIMEOUT_S = 5
IMAGE_SHAPE = (1, 28, 28)
CLASSES = ["any", "Sneaker", "Bag", "Ankle boot", "T-shirt/top"]


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(
        server.url,
        verbose=False,
        analytics_enabled=False,
        download_files=str(tmp_path_factory.mktemp("downloads")),
    )


def generate_args(
    class_name="Sneaker", seed=0, num_images=4, sampler="ddim", steps=10, guidance=1.0, strength=0.5
) -> tuple:
    return (class_name, seed, num_images, sampler, steps, guidance, strength)


def test_concurrent_requests_all_succeed_and_page_stays_responsive(server, client):
    import httpx

    api = client.view_api(print_info=False, return_format="dict")
    assert {"/generate", "/interpolate"} <= set(api["named_endpoints"])
    key = _model_key(client)

    jobs = [
        client.submit(
            key,
            *generate_args(CLASSES[i % len(CLASSES)], seed=i, num_images=1 + i % 16),
            api_name="/generate",
        )
        for i in range(NUM_CONCURRENT)
    ]
    start = time.monotonic()
    page = httpx.get(server.url, timeout=PAGE_TIMEOUT_S)
    assert page.status_code == 200
    assert time.monotonic() - start < PAGE_TIMEOUT_S
    for i, job in enumerate(jobs):
        picture, png, npz = job.result(timeout=REQUEST_TIMEOUT_S)
        assert Image.open(picture).size == grid_size(1 + i % 16, IMAGE_SHAPE)
        assert Image.open(png).size == Image.open(picture).size
        assert npz.endswith(".npz")
    assert server.process.poll() is None


# Gradio checks the components' bounds and choices; the studio refuses what gets past them.
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_images": MAX_IMAGES + 1}, f"greater than maximum value {MAX_IMAGES}"),
        ({"num_images": 0}, "less than minimum value 1"),
        ({"num_images": 2.5}, f"number of images must be a whole number from 1 to {MAX_IMAGES}"),
        ({"steps": MAX_STEPS + 1}, f"greater than maximum value {MAX_STEPS}"),
        ({"seed": -1}, "less than minimum value 0"),
        ({"guidance": 51.0}, "greater than maximum value"),
        ({"class_name": "Hat"}, "unknown class 'Hat'; choose from: T-shirt/top"),
        ({"sampler": "euler"}, "euler is not in the list of choices"),
    ],
)
def test_out_of_bound_inputs_are_refused_with_a_message(client, changes, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        client.predict(_model_key(client), *generate_args(**changes), api_name="/generate")
    # The server still answers a sound request afterwards.
    picture, _, _ = client.predict(
        _model_key(client), *generate_args(num_images=1), api_name="/generate"
    )
    assert Image.open(picture).size == grid_size(1, IMAGE_SHAPE)


def _model_key(client) -> str:
    """The one model the server offers (the checkpoint path it was given)."""
    config = client.config
    (dropdown,) = [c for c in config["components"] if c.get("props", {}).get("label") == "Model"]
    return dropdown["props"]["value"]
