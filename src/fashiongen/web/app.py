"""The Gradio page over `fashiongen.web.studio`: controls in, grid and strip out.

Nothing here decides anything about models: each event handler calls one `Studio` method
and turns a refused request (`FashiongenError`) into a message on the page. The page works
offline: analytics and the version check are off, the theme names system fonts only (no
web fonts, so none can come from Google Fonts), and no share link, server-side rendering
or MCP server is started. The server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import hashlib
import html
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashiongen import limits
from fashiongen.errors import ConfigError, FashiongenError
from fashiongen.files import atomic_path
from fashiongen.samplers import SAMPLERS
from fashiongen.web.design import build_design_tab
from fashiongen.web.studio import (
    ANY_CLASS,
    MAX_FRAMES,
    MAX_IMAGES,
    MAX_SEED,
    MAX_STEPS,
    ModelInfo,
    Studio,
    png_bytes,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MIN_PORT, MAX_PORT = 1, 65535
GRID_HEIGHT_PX = 480  # shown enlarged; the file keeps its own size
STRIP_HEIGHT_PX = 160
MAX_QUEUED_REQUESTS = 64  # further requests are refused with "queue full" until some finish
SYSTEM_FONTS = [
    "ui-sans-serif",
    "system-ui",
    "Segoe UI",
    "Roboto",
    "Helvetica",
    "Arial",
    "sans-serif",
]
SYSTEM_MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
# Small images fill their frame, enlarged without blurring (28x28 tiles would look tiny).
CSS = (
    "#grid img, #strip img, #design img, #converted img { width: 100%; height: 100%; "
    "object-fit: contain; "
    "image-rendering: pixelated; }"
)


def _import_gradio() -> Any:
    """gradio, with its analytics and version check switched off before it starts."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise FashiongenError("the web page needs Gradio: pip install 'fashiongen[web]'") from None
    return gradio


def build_app(studio: Studio, out_dir: str | Path) -> Any:
    """The `gradio.Blocks` page; downloads are written under `out_dir`."""
    gr = _import_gradio()
    out_dir = Path(out_dir)
    # Gradio finds a handler's progress bar by a `gr.Progress` default and passes a fresh one.
    tracked = gr.Progress()

    def refused(error: FashiongenError) -> Exception:
        # Gradio renders the message as HTML; a refused value is shown, never interpreted.
        return gr.Error(html.escape(str(error), quote=False), print_exception=False)

    def write(name: str, data: bytes) -> str:
        path = out_dir / name
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return str(path)

    # Gradio's copies of served files are dropped after an hour, so a long session stays small.
    with gr.Blocks(
        title="fashiongen studio", analytics_enabled=False, delete_cache=(3600, 3600)
    ) as app:
        gr.Markdown(
            "# fashiongen studio\nSample a trained model, pick a class and a seed, "
            "and download what you like. Everything runs on this machine."
        )
        with gr.Tab("Sample"):
            page = _sample_tab(gr, studio.keys, studio.info(studio.keys[0]))
        with gr.Tab("Design"):
            build_design_tab(gr, studio, write, refused, tracked)
        _wire_sample_tab(page, _sample_handlers(gr, studio, write, refused, tracked))
    return app


@dataclass(frozen=True)
class _SamplePage:
    """The Sample tab's components that its events read or update."""

    model: Any
    about: Any
    class_name: Any
    seed: Any
    num_images: Any
    diffusion: Any
    sampler: Any
    steps: Any
    guidance: Any
    strength: Any
    guide_scale: Any
    generate_button: Any
    grid: Any
    png_file: Any
    npz_file: Any
    seed_a: Any
    seed_b: Any
    num_frames: Any
    interpolate_button: Any
    strip: Any
    strip_note: Any


def _sample_tab(gr: Any, keys: Sequence[str], first: ModelInfo) -> _SamplePage:
    """The Sample tab's layout, set for the first model: controls beside the grid, then the
    interpolation strip."""
    with gr.Row():
        with gr.Column(scale=1):
            controls = _sample_controls(gr, keys, first)
        with gr.Column(scale=2):
            outputs = _grid_outputs(gr)
    return _SamplePage(**controls, **outputs, **_interpolation_panel(gr))


def _sample_controls(gr: Any, keys: Sequence[str], first: ModelInfo) -> dict[str, Any]:
    """The left column: model, class, seed, number of images, diffusion sampling, Generate."""
    model = gr.Dropdown(keys, value=first.key, label="Model")
    about = gr.Markdown(_describe(first))
    # Any value passes the page to the studio, which checks it against the model
    # named in the same call: the API needs no earlier /model_info in its session.
    class_name = gr.Dropdown(
        _class_choices(first),
        value=ANY_CLASS,
        label="Class",
        visible=bool(first.class_names),
        elem_id="class",
        allow_custom_value=True,
    )
    seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=MAX_SEED)
    num_images = gr.Slider(1, MAX_IMAGES, value=16, step=1, label="Number of images")
    with gr.Accordion("Diffusion sampling", open=True, visible=first.uses_sampler) as diffusion:
        sampling = _sampling_controls(gr, first)
    generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
    return {
        "model": model,
        "about": about,
        "class_name": class_name,
        "seed": seed,
        "num_images": num_images,
        "diffusion": diffusion,
        **sampling,
        "generate_button": generate_button,
    }


def _sampling_controls(gr: Any, first: ModelInfo) -> dict[str, Any]:
    """The diffusion sampler, its steps, guidance scale, hybrid strength and autoguidance
    scale (empty: the model's own, so that an API call without it gets the model's)."""
    sampler = gr.Dropdown(list(SAMPLERS), value=first.sampling.sampler, label="Sampler")
    steps = gr.Slider(1, MAX_STEPS, value=first.sampling.num_steps, step=1, label="Steps")
    guidance = gr.Slider(
        0,
        limits.MAX_GUIDANCE_SCALE,
        value=first.sampling.guidance_scale,
        step=0.1,
        label="Guidance scale (1 = off)",
        visible=first.uses_sampler and bool(first.class_names),
    )
    strength = gr.Slider(
        0,
        1,
        value=first.sampling.strength,
        step=0.05,
        label="Hybrid strength",
        visible=first.uses_strength,
    )
    guide_scale = gr.Number(
        None,
        label="Autoguidance scale (1 = off)",
        placeholder=_own_guide_scale(first),
        minimum=0,
        maximum=limits.MAX_GUIDANCE_SCALE,
        step=0.25,
        visible=first.uses_guide,
    )
    return {
        "sampler": sampler,
        "steps": steps,
        "guidance": guidance,
        "strength": strength,
        "guide_scale": guide_scale,
    }


def _own_guide_scale(info: ModelInfo) -> str:
    return f"the model's own: {info.sampling.guide_scale:g}"


def _grid_outputs(gr: Any) -> dict[str, Any]:
    """The right column: the grid and its PNG and npz downloads."""
    grid = gr.Image(
        label="Samples",
        type="pil",
        format="png",
        elem_id="grid",
        interactive=False,
        buttons=["download", "fullscreen"],
        height=GRID_HEIGHT_PX,
    )
    with gr.Row():
        png_file = gr.DownloadButton("Download PNG", elem_id="download-png")
        npz_file = gr.DownloadButton("Download npz", elem_id="download-npz")
    return {"grid": grid, "png_file": png_file, "npz_file": npz_file}


def _interpolation_panel(gr: Any) -> dict[str, Any]:
    """Seeds A and B, the number of frames, Interpolate, and the strip with its note."""
    gr.Markdown("## Interpolation\nFrom seed A's sample to seed B's, in one class.")
    with gr.Row():
        seed_a = gr.Number(0, label="Seed A", precision=0, minimum=0, maximum=MAX_SEED)
        seed_b = gr.Number(7, label="Seed B", precision=0, minimum=0, maximum=MAX_SEED)
        num_frames = gr.Slider(2, MAX_FRAMES, value=8, step=1, label="Frames")
        interpolate_button = gr.Button("Interpolate", elem_id="interpolate")
    strip = gr.Image(
        label="Strip",
        type="pil",
        format="png",
        elem_id="strip",
        interactive=False,
        buttons=["download", "fullscreen"],
        height=STRIP_HEIGHT_PX,
    )
    strip_note = gr.Markdown()
    return {
        "seed_a": seed_a,
        "seed_b": seed_b,
        "num_frames": num_frames,
        "interpolate_button": interpolate_button,
        "strip": strip,
        "strip_note": strip_note,
    }


@dataclass(frozen=True)
class _SampleHandlers:
    """The Sample tab's event handlers: each calls one `Studio` method."""

    on_model: Callable[..., tuple]
    on_generate: Callable[..., tuple]
    on_interpolate: Callable[..., tuple]


def _sample_handlers(
    gr: Any,
    studio: Studio,
    write: Callable[[str, bytes], str],
    refused: Callable[[FashiongenError], Exception],
    tracked: Any,
) -> _SampleHandlers:
    """Handlers that turn a refused request into a message on the page (`refused`) and write
    downloads with `write`; `tracked` is the progress-bar default Gradio looks for."""
    return _SampleHandlers(
        on_model=_model_info_handler(gr, studio, refused),
        on_generate=_generate_handler(studio, write, refused, tracked),
        on_interpolate=_interpolate_handler(studio, refused, tracked),
    )


def _model_info_handler(
    gr: Any, studio: Studio, refused: Callable[[FashiongenError], Exception]
) -> Callable[[str], tuple]:
    """The model dropdown's handler: the class, sampling controls and description set for
    the chosen model."""

    def on_model(key: str) -> tuple:
        try:
            info = studio.info(key)
        except FashiongenError as e:
            raise refused(e) from None
        return (
            gr.Dropdown(
                choices=_class_choices(info), value=ANY_CLASS, visible=bool(info.class_names)
            ),
            gr.Accordion(visible=info.uses_sampler),
            gr.Dropdown(value=info.sampling.sampler),
            gr.Slider(value=info.sampling.num_steps),
            gr.Slider(
                visible=info.uses_sampler and bool(info.class_names),
                value=info.sampling.guidance_scale,
            ),
            gr.Slider(visible=info.uses_strength, value=info.sampling.strength),
            gr.Number(value=None, visible=info.uses_guide, placeholder=_own_guide_scale(info)),
            _describe(info),
        )

    return on_model


def _generate_handler(
    studio: Studio,
    write: Callable[[str, bytes], str],
    refused: Callable[[FashiongenError], Exception],
    tracked: Any,
) -> Callable[..., tuple]:
    """The Generate button's handler: the grid and the paths of its PNG and npz files."""

    def on_generate(
        key: str,
        class_name: str,
        seed: float,
        num_images: float,
        sampler: str,
        steps: float,
        guidance: float,
        strength: float,
        guide_scale: float | None = None,
        progress: Any = tracked,
    ) -> tuple:
        request = (
            key,
            class_name,
            seed,
            num_images,
            sampler,
            steps,
            guidance,
            strength,
            guide_scale,
        )
        try:
            grid = studio.generate_grid(*request, progress=_reporter(progress))
        except FashiongenError as e:
            raise refused(e) from None
        # Same request, same file name: repeated requests do not fill the disk.
        stem = "grid-" + hashlib.sha256(repr(request).encode()).hexdigest()[:16]
        png = write(f"{stem}.png", png_bytes(grid.image))
        npz = write(f"{stem}.npz", grid.npz)
        return grid.image, png, npz

    return on_generate


def _interpolate_handler(
    studio: Studio, refused: Callable[[FashiongenError], Exception], tracked: Any
) -> Callable[..., tuple]:
    """The Interpolate button's handler: the strip and its note."""

    def on_interpolate(
        key: str,
        class_name: str,
        seed_a: float,
        seed_b: float,
        num_frames: float,
        sampler: str,
        steps: float,
        guidance: float,
        strength: float,
        guide_scale: float | None = None,
        progress: Any = tracked,
    ) -> tuple:
        try:
            strip = studio.interpolate(
                key,
                class_name,
                seed_a,
                seed_b,
                num_frames,
                sampler,
                steps,
                guidance,
                strength,
                guide_scale,
                progress=_reporter(progress),
            )
        except FashiongenError as e:
            raise refused(e) from None
        return strip.image, strip.note

    return on_interpolate


def _wire_sample_tab(page: _SamplePage, handlers: _SampleHandlers) -> None:
    """The Sample tab's events, each a named API endpoint."""
    sampling_inputs = [page.sampler, page.steps, page.guidance, page.strength, page.guide_scale]
    page.model.change(
        handlers.on_model,
        page.model,
        [page.class_name, page.diffusion, *sampling_inputs, page.about],
        api_name="model_info",
    )
    page.generate_button.click(
        handlers.on_generate,
        [page.model, page.class_name, page.seed, page.num_images, *sampling_inputs],
        [page.grid, page.png_file, page.npz_file],
        api_name="generate",
    )
    page.interpolate_button.click(
        handlers.on_interpolate,
        [page.model, page.class_name, page.seed_a, page.seed_b, page.num_frames, *sampling_inputs],
        [page.strip, page.strip_note],
        api_name="interpolate",
    )


def serve(
    checkpoints: Sequence[str | Path] = (),
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    block: bool = True,
) -> Any:
    """Serve the page for the zoo's models and `checkpoints`; blocks until Ctrl-C.

    With `block=False` it returns the running `gradio.Blocks` (call `.close()` to stop).
    """
    if not MIN_PORT <= port <= MAX_PORT:  # a one-line error, not a traceback from the socket
        raise ConfigError(f"--port must be between {MIN_PORT} and {MAX_PORT}, got {port}")
    studio = Studio.from_sources(checkpoints)  # a bad path fails before Gradio's slow import
    gr = _import_gradio()
    out_dir = Path(tempfile.mkdtemp(prefix="fashiongen-web-"))
    app = build_app(studio, out_dir)
    app.queue(max_size=MAX_QUEUED_REQUESTS, default_concurrency_limit=1)
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO_FONTS)
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        show_error=True,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        allowed_paths=[str(out_dir)],
        theme=theme,
        css=CSS,
        footer_links=["api"],
        quiet=False,
    )
    return app


def _class_choices(info: ModelInfo) -> list[str]:
    return [ANY_CLASS, *info.class_names]


def _describe(info: ModelInfo) -> str:
    kind = f"{len(info.class_names)} classes" if info.class_names else "unconditional"
    c, h, w = info.image_shape
    return f"`{info.family}`, step {info.step}, {kind}, {c}x{h}x{w} images"


def _reporter(progress: Any) -> Callable[[int, int], None]:
    """Studio's `progress(done, total)` as Gradio progress-bar updates."""
    return lambda done, total: progress((done, total), desc="Sampling", unit="steps")
