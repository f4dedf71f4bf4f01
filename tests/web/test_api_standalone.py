"""The page's API works standalone (issue 17): every endpoint checks its inputs against the
model named in the call, not against what an earlier call showed in the same session.
Served in this process on 127.0.0.1 and called with `gradio_client`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fashiongen.web.studio import Studio, grid_size

IMAGE_SHAPE = (1, 28, 28)
gr = pytest.importorskip("gradio", reason="the web extra is not installed")
gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def client(
    unconditional_checkpoint, conditional_checkpoint, autoguided_checkpoint, tmp_path_factory
):
    from fashiongen.web.app import build_app

    # The first model (what a fresh session shows) is unconditional: no class choices.
    studio = Studio(
        {
            "plain": unconditional_checkpoint,
            "classes": conditional_checkpoint,
            "guided": autoguided_checkpoint,
        }
    )
    app = build_app(studio, tmp_path_factory.mktemp("web-out"))
    app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        yield gradio_client.Client(
            app.local_url,
            verbose=False,
            analytics_enabled=False,
            download_files=str(tmp_path_factory.mktemp("downloads")),
        )
    finally:
        app.close()


def test_a_class_of_another_model_needs_no_model_info_first(client):
    picture, png, npz = client.predict(
        "classes", "8", 0, 2, "ddim", 2, 1.0, 0.5, api_name="/generate"
    )
    assert Image.open(picture).size == grid_size(2, IMAGE_SHAPE) and npz.endswith(".npz")
    strip, note = client.predict(
        "classes", "8", 0, 1, 3, "ddim", 2, 1.0, 0.5, api_name="/interpolate"
    )
    assert "seed 0" in note and Image.open(strip).width > 0


def test_the_named_model_decides_what_is_refused(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="unconditional"):
        client.predict("plain", "Bag", 0, 2, "ddim", 2, 1.0, 0.5, api_name="/generate")
    with pytest.raises(AppError, match="unknown class 'Hat'"):
        client.predict("classes", "Hat", 0, 2, "ddim", 2, 1.0, 0.5, api_name="/generate")
    with pytest.raises(AppError, match="nope"):
        client.predict("nope", "any", 0, 2, "ddim", 2, 1.0, 0.5, api_name="/generate")


def test_a_call_without_the_guide_scale_gets_the_models_own(client):
    """The autoguidance scale came last to the page: a call written before it (8 values) gets
    the named model's own scale (2.5), not the field's value for the page's first model."""

    def images(*guide_scale):
        request = ("guided", "3", 0, 2, "ddim", 2, 1.0, 0.5, *guide_scale)
        _, _, npz = client.predict(*request, api_name="/generate")
        with np.load(npz) as f:
            return f["images"]

    own = images()
    np.testing.assert_array_equal(images(2.5), own)
    assert np.abs(images(1.0) - own).mean() > 1e-4  # 1: autoguidance off
