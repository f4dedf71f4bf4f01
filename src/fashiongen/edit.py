"""`fashiongen edit`: pictures (and a mask) in, refined, inpainted or varied garments out.

Reads each input picture (any size and mode), fits it to the model's frame with
`fashiongen.editing.fit_to_frame` and reports what the conversion did, then refines it
(`--strength`, `--class`), inpaints the white part of `--mask`, or draws `--variations N`
of it, and writes the results as `fashiongen sample` does (`fashiongen.samples.save_samples`:
a PNG grid with one row per input, a PNG folder or an .npz). Every refusal is one line,
before anything is computed or written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fashiongen import editing
from fashiongen.checkpoint import load_model, model_source
from fashiongen.data.folder import READ_ERRORS
from fashiongen.errors import ConfigError, DataError
from fashiongen.images import to_model_range, to_uint8
from fashiongen.models.base import Family
from fashiongen.samples import class_names_of, output_form, parse_classes, save_samples


@dataclass(frozen=True)
class EditResult:
    """What `edit_to` wrote: the path, how many images, and one line per input on how it
    was converted to the model's frame."""

    out: Path
    num_images: int
    conversions: list[str]


def read_picture(path: str | Path, what: str = "input") -> Image.Image:
    """A decoded picture, or a one-line DataError naming the file."""
    try:
        with Image.open(path) as picture:
            picture.load()
            return picture
    except FileNotFoundError:
        raise DataError(f"cannot read {what} {path}: no such file") from None
    except READ_ERRORS as e:
        raise DataError(f"cannot read {what} {path}: {e or type(e).__name__}") from None


def check_strength(strength: float) -> float:
    """`strength` if it lies in (0, 1], else a one-line ConfigError."""
    if not (isinstance(strength, int | float) and math.isfinite(strength) and 0 < strength <= 1):
        raise ConfigError(f"--strength must lie in (0, 1], got {strength}")
    return float(strength)


def edit_to(
    out: str | Path,
    model_source: str | Path,
    inputs: list[str | Path],
    *,
    strength: float = editing.DEFAULT_STRENGTH,
    class_name: str | None = None,
    mask: str | Path | None = None,
    num_variations: int = 1,
    seed: int = 0,
    use_transfer: bool = False,
    use_fill: bool = False,
    overwrite: bool = False,
) -> EditResult:
    """Edit `inputs` with the model at `model_source` and write the results to `out`.

    Args:
        out: `x.png` (a grid, one row per input), `x.npz` or `dir/` (PNGs).
        model_source: a zoo name, run folder or checkpoint of a family that can edit.
        inputs: picture files of any size and mode.
        strength: in (0, 1]: how far each input is noised before denoising.
        class_name: the class to refine towards (name or id), or None to keep the input's.
        mask: a picture, white where pixels are regenerated (inpainting), of the model's
            size or the inputs' own.
        num_variations: outputs per input, each with its own noise.
        seed: the same seed gives the same images.
        use_transfer: the class-transfer setting (`editing.TRANSFER_*`): the silhouette may
            change towards `class_name`.
        use_fill: fill closed outlines of a sketch before editing.
        overwrite: replace an existing `out`.
    """
    check_strength(strength)
    output_form(out)  # an unwritable form is refused before the model loads
    pictures, mask_picture = _read_inputs(inputs, mask, num_variations)
    model, checkpoint = load_model(model_source)
    editing.editor_of(model)  # a family that cannot edit says so now
    class_names = class_names_of(checkpoint) if model.num_classes else []
    label = _label(model.num_classes, class_name, class_names)
    fitted = [
        editing.fit_to_frame(picture, model.image_shape, use_fill=use_fill) for picture in pictures
    ]
    x, masks = _to_batch(fitted, mask_picture, num_variations)
    labels = None if label is None else torch.full((len(x),), label, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    out_images = _edit_batch(
        model, x, masks, labels, strength=strength, use_transfer=use_transfer, generator=generator
    )
    written = save_samples(
        out,
        to_uint8(out_images),
        labels,
        class_names=class_names or None,
        num_rows=len(inputs),
        overwrite=overwrite,
    )
    conversions = [
        f"{path}: {framing.describe()}" for path, (_, framing) in zip(inputs, fitted, strict=True)
    ]
    return EditResult(written, len(out_images), conversions)


def _read_inputs(
    inputs: list[str | Path], mask: str | Path | None, num_variations: int
) -> tuple[list[Image.Image], Image.Image | None]:
    """The decoded input pictures and mask, after the checks that need no model."""
    if not inputs:
        raise ConfigError("edit needs at least one input picture")
    if num_variations < 1:
        raise ConfigError(f"--variations must be >= 1, got {num_variations}")
    pictures = [read_picture(path) for path in inputs]
    mask_picture = None if mask is None else read_picture(mask, "mask")
    return pictures, mask_picture


def _to_batch(
    fitted: list[tuple[np.ndarray, editing.Framing]],
    mask_picture: Image.Image | None,
    num_variations: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fitted inputs in [-1, 1] (N * num_variations, C, H, W), each repeated once per
    variation, and the mask fitted to each input's framing, repeated alike (or None)."""
    masks = (
        None
        if mask_picture is None
        else torch.from_numpy(
            np.stack([editing.mask_to_frame(mask_picture, framing) for _, framing in fitted])
        )
    )
    x = to_model_range(torch.stack([torch.from_numpy(array) for array, _ in fitted]))
    x = x.repeat_interleave(num_variations, dim=0)
    if masks is not None:
        masks = masks.repeat_interleave(num_variations, dim=0)
    return x, masks


def _edit_batch(
    model: Family,
    x: torch.Tensor,
    masks: torch.Tensor | None,
    labels: torch.Tensor | None,
    *,
    strength: float,
    use_transfer: bool,
    generator: torch.Generator,
) -> torch.Tensor:
    """Inpaint `x` where `masks` is white, else refine it (with the class-transfer settings
    if `use_transfer`); the edited images in [-1, 1]."""
    if masks is not None:
        return editing.inpaint(
            model, x, masks, labels=labels, strength=strength, generator=generator
        )
    guidance, sampling = editing.refine_settings(use_transfer)
    return editing.refine(
        model,
        x,
        strength,
        labels=labels,
        guidance=guidance,
        sampling=sampling,
        generator=generator,
    )


def _label(num_classes: int, class_name: str | None, class_names: list[str]) -> int | None:
    if class_name is None:
        return None
    if not num_classes:
        raise ConfigError("this model is unconditional: --class needs a conditional model")
    (label,) = parse_classes([class_name], class_names)
    return label


def edit_command(
    out: str, model: str, inputs: list[str], *, strength: float | None, **options: object
) -> int:
    """`fashiongen edit`: edit, then print each input's conversion and what was written."""
    result = edit_to(
        out,
        model_source(model),
        inputs,
        strength=_default_strength(options) if strength is None else strength,
        **options,
    )
    for line in result.conversions:
        print(f"input {line}")
    print(f"wrote {result.num_images} edited images from {model} to {result.out}")
    return 0


def _default_strength(options: dict[str, object]) -> float:
    """Inpainting starts the hole from pure noise; refining keeps some of the input."""
    return 1.0 if options.get("mask") is not None else editing.DEFAULT_STRENGTH
