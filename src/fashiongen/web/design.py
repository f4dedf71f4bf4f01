"""The studio's Design tab: a sketch or photo in, refined garments out, and a design board.

`Designer` is the tab's logic, free of Gradio and tested without a browser: it converts a
picture to the model's frame (`fashiongen.editing.fit_to_frame`, the conversion shown to
the user), runs a `Recipe` (model, mode, class, strength, how closely to follow the input,
seed, number of variations, the converted input and mask themselves) and returns the
images; the same recipe gives the same bytes. The design board is a list of (recipe,
picture) entries, downloaded as a zip of PNGs plus `recipe.json` and re-loaded from one.
`build_design_tab` draws the tab inside the page `fashiongen.web.app` builds; each handler
calls one `Designer` method and shows a refusal as a message.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from fashiongen import editing
from fashiongen.errors import ConfigError, FashiongenError
from fashiongen.images import make_grid, to_model_range, to_pil, to_uint8
from fashiongen.samples import class_names_of, parse_classes
from fashiongen.version import __version__
from fashiongen.web.studio import ANY_CLASS, GRID_SCALE, MAX_SEED, Studio, bounded_int, png_bytes

BOARD_FORMAT = "fashiongen-design-board/1"
RECIPE_FILE = "recipe.json"
MAX_VARIATIONS = 8
MAX_BOARD_ENTRIES = 64
MAX_BOARD_BYTES = 16 * 2**20  # a board zip larger than this is refused before reading
PAD_SIZE = 280  # the sketch pad's canvas, pixels (10x a 28x28 image)
MASK_COVER = 0.3  # a model pixel is masked when the brush covers this share of it
FOLLOW = {  # how closely an edit follows the input: guidance and sampling settings
    "closely": editing.refine_settings(),
    "loosely": editing.refine_settings(use_transfer=True),
}
Follow = Literal["closely", "loosely"]
Mode = Literal["refine", "inpaint"]


@dataclass(frozen=True)
class Recipe:
    """Everything that reproduces one design: the converted input (and mask) as base64 PNG
    of the model's size, so no original file is needed."""

    model: str
    mode: Mode
    class_name: str  # a class name, or "any" to keep the input's
    strength: float
    follow: Follow
    seed: int
    num_variations: int
    input_png: str
    mask_png: str | None = None
    version: str = __version__

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """A recipe from its JSON form; unknown or missing keys are a ConfigError."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ConfigError(f"recipe: unknown keys {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except TypeError as e:
            raise ConfigError(f"recipe: {e}") from None


@dataclass(frozen=True)
class Design:
    """A recipe's result: uint8 images (N, C, H, W) and their grid picture."""

    recipe: Recipe
    images: torch.Tensor
    picture: Image.Image


def encode_png(array: np.ndarray) -> str:
    """uint8 (C, H, W) or bool (1, H, W) -> base64 PNG text."""
    grey = (array[0] > 0).astype(np.uint8) * 255 if array.dtype == bool else array[0]
    return base64.b64encode(png_bytes(Image.fromarray(grey))).decode("ascii")


def decode_png(text: str, what: str) -> np.ndarray:
    """base64 PNG text -> uint8 (H, W), or a ConfigError naming `what`."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(text, validate=True))) as image:
            return np.asarray(image.convert("L"))
    except (ValueError, OSError) as e:
        raise ConfigError(f"recipe: the {what} is not a base64 PNG ({e})") from None


class Designer:
    """The Design tab's requests over the studio's models."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def editable_keys(self) -> list[str]:
        """The studio's models that can edit (ddpm, hybrid), in the studio's order."""
        return [key for key in self.studio.keys if editing.can_edit(self.studio.load(key)[0])]

    def convert(
        self, key: str, picture: Image.Image | None, *, use_fill: bool
    ) -> tuple[np.ndarray, str]:
        """A drawn or uploaded picture in the model's frame (uint8 (C, H, W)) and a line on
        how it was converted."""
        if picture is None:
            raise ConfigError("draw a garment on the sketch pad or upload a picture first")
        model, _ = self.studio.load(key)
        array, framing = editing.fit_to_frame(picture, model.image_shape, use_fill=use_fill)
        return array, f"Input: {framing.describe()}."

    def run(self, recipe: Recipe, *, progress: Callable[[int, int], None] | None = None) -> Design:
        """The images of `recipe`, reproducibly from its seed."""
        model, checkpoint = self.studio.load(recipe.model)
        editing.editor_of(model)  # a model that cannot edit says so first
        seed = bounded_int("seed", recipe.seed, 0, MAX_SEED)
        count = bounded_int("number of variations", recipe.num_variations, 1, MAX_VARIATIONS)
        if not 0 < recipe.strength <= 1:
            raise ConfigError(f"strength must lie in (0, 1], got {recipe.strength}")
        if recipe.follow not in FOLLOW:
            raise ConfigError(f"follow must be one of {', '.join(FOLLOW)}")
        x = self._input(recipe, model.image_shape).repeat(count, 1, 1, 1)
        labels = None
        if recipe.class_name.strip().lower() not in ("", ANY_CLASS):
            if not model.num_classes:
                raise ConfigError("this model is unconditional: choose class 'any'")
            (label,) = parse_classes([recipe.class_name], class_names_of(checkpoint))
            labels = torch.full((count,), label, dtype=torch.long)
        callback = None if progress is None else (lambda i, n: progress(i + 1, n))
        generator = torch.Generator().manual_seed(seed)
        if recipe.mode == "inpaint":
            mask = self._mask(recipe, model.image_shape).repeat(count, 1, 1, 1)
            out = editing.inpaint(
                model,
                x,
                mask,
                labels=labels,
                strength=recipe.strength,
                generator=generator,
                callback=callback,
            )
        else:
            guidance, sampling = FOLLOW[recipe.follow]
            out = editing.refine(
                model,
                x,
                recipe.strength,
                labels=labels,
                guidance=guidance,
                sampling=sampling,
                generator=generator,
                callback=callback,
            )
        images = to_uint8(out)
        return Design(recipe, images, to_pil(make_grid(images, num_rows=1), GRID_SCALE))

    @staticmethod
    def _input(recipe: Recipe, image_shape: tuple[int, int, int]) -> torch.Tensor:
        channels, height, width = image_shape
        grey = decode_png(recipe.input_png, "input")
        if grey.shape != (height, width):
            raise ConfigError(
                f"recipe: the input is {grey.shape[1]}x{grey.shape[0]}, the "
                f"model's images {width}x{height}"
            )
        return to_model_range(torch.from_numpy(grey.copy())[None, None].repeat(1, channels, 1, 1))

    @staticmethod
    def _mask(recipe: Recipe, image_shape: tuple[int, int, int]) -> torch.Tensor:
        if recipe.mask_png is None:
            raise ConfigError("inpainting needs a mask: paint over the part to regenerate")
        mask = decode_png(recipe.mask_png, "mask") > 127
        if mask.shape != tuple(image_shape[1:]):
            raise ConfigError(
                f"recipe: the mask is {mask.shape[1]}x{mask.shape[0]}, the "
                f"model's images {image_shape[2]}x{image_shape[1]}"
            )
        if not mask.any():
            raise ConfigError("the mask is empty: paint over the part to regenerate")
        return torch.from_numpy(mask)[None, None]


def mask_from_layers(layers: list[Image.Image], frame: tuple[int, int]) -> np.ndarray | None:
    """The painted strokes of the mask editor's layers -> bool (1, H, W) in the model's
    frame (a pixel is masked when strokes cover MASK_COVER of it), or None if unpainted."""
    painted = None
    for layer in layers:
        alpha = np.asarray(layer.convert("RGBA"))[..., 3]
        painted = alpha if painted is None else np.maximum(painted, alpha)
    if painted is None or not painted.any():
        return None
    small = Image.fromarray(painted).resize(frame, Image.Resampling.BOX)
    return (np.asarray(small) > MASK_COVER * 255)[None]


# ---------------------------------------------------------------------- the design board


def board_zip(designs: list[Design]) -> bytes:
    """A zip of each design's PNG (`design-001.png` ...) and `recipe.json` listing them."""
    if len(designs) > MAX_BOARD_ENTRIES:
        raise ConfigError(f"the board holds at most {MAX_BOARD_ENTRIES} designs")
    entries = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for i, design in enumerate(designs, start=1):
            name = f"design-{i:03d}.png"
            archive.writestr(name, png_bytes(design.picture))
            entries.append({"file": name, "recipe": dataclasses.asdict(design.recipe)})
        archive.writestr(
            RECIPE_FILE, json.dumps({"format": BOARD_FORMAT, "designs": entries}, indent=1)
        )
    return buffer.getvalue()


def read_board(path: str | Path) -> list[Recipe]:
    """The recipes of a board zip (`board_zip`), or a one-line ConfigError."""
    path = Path(path)
    if path.stat().st_size > MAX_BOARD_BYTES:
        raise ConfigError(f"{path.name} is larger than a board may be ({MAX_BOARD_BYTES} bytes)")
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read(RECIPE_FILE))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise ConfigError(f"{path.name} is not a design board zip ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BOARD_FORMAT:
        raise ConfigError(f"{path.name}: {RECIPE_FILE} is not a {BOARD_FORMAT} file")
    designs = manifest.get("designs")
    if not isinstance(designs, list) or len(designs) > MAX_BOARD_ENTRIES:
        raise ConfigError(f"{path.name}: expected a list of at most {MAX_BOARD_ENTRIES} designs")
    return [
        Recipe.from_dict(entry.get("recipe", {})) for entry in designs if isinstance(entry, dict)
    ]


# ---------------------------------------------------------------------- the Gradio tab


@dataclass(frozen=True)
class _DesignTab:
    """The Design tab's components that its events read or update."""

    model: Any
    sketch: Any
    use_fill: Any
    class_name: Any
    strength: Any
    follow: Any
    seed: Any
    count: Any
    refine_button: Any
    inpaint_button: Any
    converted: Any
    note: Any
    mask_pad: Any
    result: Any
    save_button: Any
    board: Any
    current: Any
    gallery: Any
    download: Any
    upload: Any

    def recipe_controls(self) -> list[Any]:
        """The controls a loaded board sets from its last recipe."""
        return [self.class_name, self.strength, self.follow, self.seed, self.count]


@dataclass(frozen=True)
class _DesignHandlers:
    """The Design tab's event handlers: each calls one `Designer` method."""

    on_refine: Callable[..., tuple]
    on_inpaint: Callable[..., tuple]
    save: Callable[..., tuple]
    load: Callable[..., tuple]


def build_design_tab(
    gr: Any,
    studio: Studio,
    write: Callable[[str, bytes], str],
    refused: Callable[[FashiongenError], Exception],
    tracked: Any,
) -> None:
    """The Design tab's components and events, inside the page's open `gr.Blocks`."""
    designer = Designer(studio)
    keys = designer.editable_keys()
    if not keys:
        gr.Markdown("No model here can edit images: serve a ddpm or hybrid checkpoint.")
        return
    first = studio.info(keys[0])
    gr.Markdown(
        "Draw a garment (or upload a photo), pick a class and refine it. Paint on "
        "the mask pad to regenerate only a part. Save what you like to the board."
    )
    with gr.Row():
        with gr.Column(scale=1):
            controls = _design_controls(gr, keys, first.class_names)
        with gr.Column(scale=1):
            outputs = _design_outputs(gr)
    tab = _DesignTab(**controls, **outputs, **_design_board(gr))
    _wire_design_tab(tab, _design_handlers(gr, designer, write, refused, tracked))


def _drawing_pad(gr: Any, *, colour: str, brush_size: int, **options: Any) -> Any:
    """A fixed PAD_SIZE canvas with one brush colour, no layers and no transforms."""
    return gr.ImageEditor(
        type="pil",
        image_mode="RGBA",
        brush=gr.Brush(colors=[colour], default_size=brush_size, color_mode="fixed"),
        canvas_size=(PAD_SIZE, PAD_SIZE),
        fixed_canvas=True,
        layers=False,
        transforms=(),
        **options,
    )


def _design_controls(gr: Any, keys: list[str], class_names: Sequence[str]) -> dict[str, Any]:
    """The left column: model, sketch pad, recipe controls and the Refine/Inpaint buttons."""
    model = gr.Dropdown(keys, value=keys[0], label="Design model", elem_id="design-model")
    white = Image.new("RGB", (PAD_SIZE, PAD_SIZE), "white")
    sketch = _drawing_pad(
        gr,
        colour="#000000",
        brush_size=14,
        value={"background": white, "layers": [], "composite": None},
        sources=["upload"],
        label="Sketch pad",
        elem_id="sketch",
    )
    use_fill = gr.Checkbox(True, label="Fill closed outlines", elem_id="fill")
    class_name = gr.Dropdown(
        [ANY_CLASS, *class_names],
        value=ANY_CLASS,
        label="Design class",
        elem_id="design-class",
        allow_custom_value=True,
    )
    strength = gr.Slider(
        0.05, 1, value=editing.DEFAULT_STRENGTH, step=0.05, label="Strength", elem_id="strength"
    )
    follow = gr.Radio(list(FOLLOW), value="loosely", label="Follow the input", elem_id="follow")
    seed = gr.Number(0, label="Design seed", precision=0, minimum=0, maximum=MAX_SEED)
    count = gr.Slider(1, MAX_VARIATIONS, value=1, step=1, label="Variations")
    with gr.Row():
        refine_button = gr.Button("Refine", variant="primary", elem_id="refine")
        inpaint_button = gr.Button("Inpaint masked part", elem_id="inpaint")
    return {
        "model": model,
        "sketch": sketch,
        "use_fill": use_fill,
        "class_name": class_name,
        "strength": strength,
        "follow": follow,
        "seed": seed,
        "count": count,
        "refine_button": refine_button,
        "inpaint_button": inpaint_button,
    }


def _design_outputs(gr: Any) -> dict[str, Any]:
    """The right column: the converted input, the mask pad, the design and its Save button."""
    converted = gr.Image(
        label="Input as the model sees it",
        type="pil",
        interactive=False,
        elem_id="converted",
        height=160,
    )
    note = gr.Markdown(elem_id="conversion")
    mask_pad = _drawing_pad(
        gr,
        colour="#ff0000",
        brush_size=20,
        sources=[],
        label="Mask brush (paint what to regenerate)",
        elem_id="mask-pad",
    )
    result = gr.Image(label="Design", type="pil", interactive=False, elem_id="design", height=200)
    save_button = gr.Button("Save to board", elem_id="save")
    return {
        "converted": converted,
        "note": note,
        "mask_pad": mask_pad,
        "result": result,
        "save_button": save_button,
    }


def _design_board(gr: Any) -> dict[str, Any]:
    """The design board: the saved designs, the current one, and the zip download/upload."""
    board = gr.State([])
    current = gr.State(None)
    gallery = gr.Gallery(label="Design board", elem_id="board", columns=4, height=240)
    with gr.Row():
        download = gr.DownloadButton("Download board (zip)", elem_id="download-board")
        upload = gr.UploadButton("Load a board", file_types=[".zip"], elem_id="load-board")
    return {
        "board": board,
        "current": current,
        "gallery": gallery,
        "download": download,
        "upload": upload,
    }


def _input_and_mask(
    designer: Designer,
    mode: Mode,
    key: str,
    pad: dict | None,
    use_fill: bool,
    mask_value: dict | None,
) -> tuple[np.ndarray, str, np.ndarray | None]:
    """The sketch pad's picture in the model's frame (uint8 (C, H, W)), the line describing
    its conversion, and for an inpaint the mask pad's strokes (bool (1, H, W)) or None."""
    picture = None if pad is None else pad.get("composite")
    array, line = designer.convert(key, picture, use_fill=bool(use_fill))
    frame = (array.shape[2], array.shape[1])
    layers = (mask_value or {}).get("layers") or []
    mask = mask_from_layers(layers, frame) if mode == "inpaint" else None
    return array, line, mask


def _design_handler(
    gr: Any,
    designer: Designer,
    refused: Callable[[FashiongenError], Exception],
    tracked: Any,
    mode: Mode,
) -> Callable[..., tuple]:
    """The Refine or Inpaint button's handler: the converted input, its note, the design
    picture, the design itself, and after a refine the input as the mask pad's background.
    Its parameter names are the API's."""

    def on_design(
        key,
        pad,
        use_fill,
        class_name,
        strength,
        follow,
        seed,
        count,
        mask_value,
        progress: Any = tracked,
    ):
        try:
            array, line, mask = _input_and_mask(designer, mode, key, pad, use_fill, mask_value)
            recipe = Recipe(
                model=key,
                mode=mode,
                class_name=class_name or ANY_CLASS,
                strength=float(strength),
                follow=follow,
                seed=int(seed or 0),
                num_variations=int(count),
                input_png=encode_png(array),
                mask_png=None if mask is None else encode_png(mask),
            )
            result = designer.run(
                recipe,
                progress=lambda done, total: progress((done, total), desc="Refining", unit="steps"),
            )
        except FashiongenError as e:
            raise refused(e) from None
        preview = to_pil(array.transpose(1, 2, 0), PAD_SIZE // array.shape[1])
        mask_background = {"background": preview.convert("RGB"), "layers": [], "composite": None}
        return (
            preview,
            line,
            result.picture,
            result,
            mask_background if mode == "refine" else gr.skip(),
        )

    # Gradio's warnings and errors name an event's function: keep it the button's.
    on_design.__name__ = on_design.__qualname__ = f"on_{mode}"
    return on_design


def _design_handlers(
    gr: Any,
    designer: Designer,
    write: Callable[[str, bytes], str],
    refused: Callable[[FashiongenError], Exception],
    tracked: Any,
) -> _DesignHandlers:
    """Handlers that turn a refused request into a message on the page (`refused`) and write
    the board's zip with `write`; `tracked` is the progress-bar default Gradio looks for."""

    def write_board(board: list[Design]) -> str:
        return write("design-board.zip", board_zip(board))

    def save(board: list[Design], current: Design | None):
        if current is None:
            raise refused(ConfigError("refine something first, then save it to the board"))
        board = [*board, current][-MAX_BOARD_ENTRIES:]
        return board, [d.picture for d in board], write_board(board)

    def load(path: str, progress: Any = tracked):
        try:
            board = [designer.run(recipe) for recipe in read_board(path)]
        except FashiongenError as e:
            raise refused(e) from None
        last = board[-1].recipe if board else None
        controls = (
            [gr.skip()] * 5
            if last is None
            else [last.class_name, last.strength, last.follow, last.seed, last.num_variations]
        )
        return (board, [d.picture for d in board], write_board(board), *controls)

    return _DesignHandlers(
        on_refine=_design_handler(gr, designer, refused, tracked, "refine"),
        on_inpaint=_design_handler(gr, designer, refused, tracked, "inpaint"),
        save=save,
        load=load,
    )


def _wire_design_tab(tab: _DesignTab, handlers: _DesignHandlers) -> None:
    """The tab's events: design (refine / inpaint, named API endpoints), then save, download
    and load the board (page only)."""
    inputs = [
        tab.model,
        tab.sketch,
        tab.use_fill,
        tab.class_name,
        tab.strength,
        tab.follow,
        tab.seed,
        tab.count,
        tab.mask_pad,
    ]
    outputs = [tab.converted, tab.note, tab.result, tab.current, tab.mask_pad]
    tab.refine_button.click(handlers.on_refine, inputs, outputs, api_name="design_refine")
    tab.inpaint_button.click(handlers.on_inpaint, inputs, outputs, api_name="design_inpaint")
    tab.save_button.click(
        handlers.save,
        [tab.board, tab.current],
        [tab.board, tab.gallery, tab.download],
        api_name=False,
    )
    tab.upload.upload(
        handlers.load,
        tab.upload,
        [tab.board, tab.gallery, tab.download, *tab.recipe_controls()],
        api_name=False,
    )
