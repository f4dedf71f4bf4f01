"""The public Python API: `fashiongen.load(...)`, `model.sample(...)`, `train`, `evaluate`,
`compare` and `zoo_models`, re-exported at the top of the package.

A thin layer over the library the CLI uses, so `fashiongen.load("ddpm").sample(16, seed=0)`
gives the same bytes as `fashiongen sample --model ddpm --num-samples 16 --seed 0`: a model
samples with its checkpoint's own settings unless a call overrides them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fashiongen import editing
from fashiongen.checkpoint import Checkpoint, attach_guide, load_model
from fashiongen.config import (
    DEFAULT_GUIDE_SCALE,
    RunConfig,
    SampleConfig,
    config_from_dict,
    config_to_dict,
    deep_merge,
    preset_path,
    read_toml,
)
from fashiongen.edit import read_picture
from fashiongen.errors import ConfigError
from fashiongen.evaluation import (
    DEFAULT_NUM_SAMPLES,
    draw_balanced,
    evaluate_source,
    resolve_featnet,
)
from fashiongen.generate import generate_labelled, interpolate
from fashiongen.images import make_grid, to_model_range, to_pil, to_uint8
from fashiongen.metrics import evaluate as score
from fashiongen.models.base import Family
from fashiongen.samples import class_labels, class_names_of, parse_classes, save_samples
from fashiongen.training import TrainResult, resolve_run_name
from fashiongen.training import train as train_config
from fashiongen.zoo import available, manifest

__all__ = ["Model", "Samples", "TrainResult", "compare", "evaluate", "load", "train", "zoo_models"]

ClassSpec = str | int | Sequence[str | int]
PictureSpec = Image.Image | str | Path | Sequence[Image.Image | str | Path] | np.ndarray


@dataclass(frozen=True)
class Samples:
    """Images drawn from a model.

    Attributes:
        images: uint8 array (N, C, H, W) in [0, 255] (the layout of `sample --out x.npz`).
        labels: int64 array (N,) of the classes drawn, or None for an unconditional model.
        class_names: the model's class names (empty if unconditional).
        num_rows: grid rows for `to_pil` (one per class for `per_class=True`), or None.
    """

    images: np.ndarray
    labels: np.ndarray | None
    class_names: list[str]
    num_rows: int | None = None

    def __len__(self) -> int:
        return len(self.images)

    def to_pil(self, index: int | None = None, *, scale: int = 1) -> Image.Image:
        """One image (`index`), or all of them as a grid, as a PIL image."""
        images = torch.from_numpy(self.images)
        if index is not None:
            return to_pil(images[index].permute(1, 2, 0).numpy(), scale)
        return to_pil(make_grid(images, self.num_rows), scale)

    def save(self, out: str | Path, *, overwrite: bool = False) -> Path:
        """Write as `fashiongen sample --out` does: `x.png` a grid, `x.npz` arrays, `dir/` PNGs."""
        labels = None if self.labels is None else torch.from_numpy(self.labels)
        return save_samples(
            out,
            torch.from_numpy(self.images),
            labels,
            class_names=self.class_names or None,
            num_rows=self.num_rows,
            overwrite=overwrite,
        )


class Model:
    """A trained model with its checkpoint's sampling settings and class names.

    Attributes:
        network: the family's `nn.Module` (`fashiongen.models.base.Family`), in eval mode.
        checkpoint: what the checkpoint holds (config, step, path, metadata).
        source: the zoo name or path it was loaded from.
        sampling: the settings `sample` uses unless a call overrides them.
        class_names: one name per class (empty if unconditional).
    """

    def __init__(self, network: Family, checkpoint: Checkpoint, source: str | Path) -> None:
        self.network = network
        self.source = str(source)
        self.checkpoint = checkpoint
        self.sampling: SampleConfig = checkpoint.config.sample
        self.class_names = class_names_of(checkpoint) if network.num_classes else []

    def __repr__(self) -> str:
        return (
            f"<fashiongen.Model {self.family} from {self.source}, step "
            f"{self.checkpoint.step}, {self.num_classes or 'no'} classes>"
        )

    @property
    def family(self) -> str:
        return self.checkpoint.config.model.name

    @property
    def num_classes(self) -> int:
        return self.network.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.network.image_shape

    def sampling_with(
        self,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        eta: float | None = None,
        guidance: float | None = None,
        strength: float | None = None,
        guide_scale: float | None = None,
    ) -> SampleConfig:
        """The checkpoint's sampling settings with the given ones replaced (checked)."""
        changes = {
            k: v
            for k, v in (
                ("sampler", sampler),
                ("num_steps", steps),
                ("eta", eta),
                ("guidance_scale", guidance),
                ("strength", strength),
                ("guide_scale", guide_scale),
            )
            if v is not None
        }
        return dataclasses.replace(self.sampling, **changes)

    def labels_for(
        self, num_samples: int, classes: ClassSpec | None, *, per_class: bool = False
    ) -> tuple[torch.Tensor | None, int | None]:
        """Labels as `fashiongen sample` draws them for `--class` / `--per-class`, and the
        grid rows (one per class with `per_class`). None: random classes."""
        if classes is None and not per_class:
            return None, None
        if not self.num_classes:
            raise ConfigError(
                f"{self.source} is unconditional: classes and per_class need a conditional model"
            )
        requested = [classes] if isinstance(classes, str | int) else list(classes or [])
        ids = (
            parse_classes([str(c) for c in requested], self.class_names)
            if requested
            else list(range(self.num_classes))
        )
        labels = class_labels(ids, num_samples, one_row_per_class=per_class)
        return labels, len(ids) if per_class else None

    def sample(
        self,
        num_samples: int = 16,
        *,
        classes: ClassSpec | None = None,
        per_class: bool = False,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        sampler: str | None = None,
        eta: float | None = None,
        strength: float | None = None,
        guide_scale: float | None = None,
    ) -> Samples:
        """Draw images, reproducibly from `seed`, as `fashiongen sample` does.

        Args:
            num_samples: how many images (with `per_class`, split evenly over the classes).
            classes: a class name or id, or a list of them, cycled over the images
                (conditional models); None draws classes at random.
            per_class: `num_samples // K` images of each class, one grid row per class.
            seed: the same seed gives the same images, whatever the batch size.
            steps, guidance, sampler, eta, strength: override the checkpoint's sampling
                settings (diffusion families and the hybrid; the others ignore them).
            guide_scale: autoguidance's weight, for a model with a guide (`load(guide=)`).
        """
        labels, num_rows = self.labels_for(num_samples, classes, per_class=per_class)
        count = num_samples if labels is None else len(labels)
        sampling = self.sampling_with(
            sampler=sampler,
            steps=steps,
            eta=eta,
            guidance=guidance,
            strength=strength,
            guide_scale=guide_scale,
        )
        images, drawn = generate_labelled(
            self.network, count, labels=labels, seed=seed, sampling=sampling
        )
        return Samples(
            images.numpy(), None if drawn is None else drawn.numpy(), self.class_names, num_rows
        )

    def interpolate(
        self, seed_a: int, seed_b: int, num_frames: int = 8, *, class_name: str | int | None = None
    ) -> Samples:
        """Images along the spherical path between two seeds' latents, one grid row (a
        conditional model keeps one class: `class_name`, or class 0)."""
        label = None
        if class_name is not None:
            label = int(self.labels_for(1, class_name)[0][0])
        images = interpolate(
            self.network,
            seed_a=seed_a,
            seed_b=seed_b,
            num_frames=num_frames,
            label=label,
            sampling=self.sampling,
        )
        labels = np.full(num_frames, label or 0, dtype=np.int64) if self.num_classes else None
        return Samples(images.numpy(), labels, self.class_names, num_rows=1)

    def refine(
        self,
        pictures: PictureSpec,
        strength: float = editing.DEFAULT_STRENGTH,
        *,
        classes: ClassSpec | None = None,
        seed: int = 0,
        use_transfer: bool = False,
        use_fill: bool = False,
    ) -> Samples:
        """Image to image (`fashiongen.editing.refine`), as `fashiongen edit` does.

        Args:
            pictures: a PIL image or file path, a list of them, or uint8 (N, C, H, W) of the
                model's shape; others are fitted to the frame (`editing.fit_to_frame`).
            strength: in (0, 1]; classes: cycled over the pictures (None keeps theirs);
            use_transfer: let the silhouette change towards the class; use_fill: fill
                closed outlines of a sketch first.
        """
        x, labels = self._edit_inputs(pictures, classes, use_fill=use_fill)
        guidance, sampling = editing.refine_settings(use_transfer)
        out = editing.refine(
            self.network,
            x,
            strength,
            labels=labels,
            guidance=guidance,
            sampling=sampling,
            generator=torch.Generator().manual_seed(seed),
        )
        return self._edited(out, labels)

    def inpaint(
        self,
        pictures: PictureSpec,
        mask: np.ndarray | torch.Tensor,
        *,
        classes: ClassSpec | None = None,
        seed: int = 0,
        strength: float = 1.0,
    ) -> Samples:
        """Regenerate where `mask` (bool (N or 1, 1, H, W), True = regenerate) is set and
        keep every other pixel exactly (`fashiongen.editing.inpaint`)."""
        x, labels = self._edit_inputs(pictures, classes)
        mask = torch.as_tensor(np.asarray(mask), dtype=torch.bool)
        out = editing.inpaint(
            self.network,
            x,
            mask.expand(len(x), -1, -1, -1),
            labels=labels,
            strength=strength,
            generator=torch.Generator().manual_seed(seed),
        )
        return self._edited(out, labels)

    def variations(
        self,
        picture: PictureSpec,
        num_variations: int = 4,
        strength: float = editing.DEFAULT_STRENGTH,
        *,
        class_name: str | int | None = None,
        seed: int = 0,
    ) -> Samples:
        """`num_variations` garments close to one picture, one grid row."""
        x, labels = self._edit_inputs(picture, class_name)
        label = None if labels is None else int(labels[0])
        out = editing.variations(
            self.network,
            x[:1],
            num_variations,
            strength,
            label=label,
            generator=torch.Generator().manual_seed(seed),
        )
        return self._edited(out, None if label is None else torch.full((len(out),), label))

    def _edit_inputs(
        self, pictures: PictureSpec, classes: ClassSpec | None, *, use_fill: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pictures in the model's range and shape, and the labels for `classes`."""
        if isinstance(pictures, np.ndarray | torch.Tensor):
            x = to_model_range(torch.as_tensor(np.asarray(pictures)))
        else:
            items = (
                pictures
                if isinstance(pictures, Sequence) and not isinstance(pictures, str)
                else [pictures]
            )
            arrays = [
                editing.fit_to_frame(
                    read_picture(p) if isinstance(p, str | Path) else p,
                    self.image_shape,
                    use_fill=use_fill,
                )[0]
                for p in items
            ]
            x = to_model_range(torch.from_numpy(np.stack(arrays)))
        labels = None if classes is None else self.labels_for(len(x), classes)[0]
        return x, labels

    def _edited(self, out: torch.Tensor, labels: torch.Tensor | None) -> Samples:
        return Samples(
            to_uint8(out).numpy(),
            None if labels is None else labels.numpy(),
            self.class_names,
            num_rows=1,
        )


def load(
    name_or_path: str | Path,
    *,
    use_ema: bool = True,
    device: str | torch.device = "cpu",
    guide: str | Path | None = None,
    guide_scale: float = DEFAULT_GUIDE_SCALE,
) -> Model:
    """A zoo model's name (`zoo_models()`), a run folder, a checkpoint folder or a weights
    file -> a Model (EMA weights unless `use_ema=False`). `guide` names a weaker model of
    the same task (e.g. the run's early checkpoint) for autoguidance at `guide_scale`, as
    `sample --guide` does (DDPM models)."""
    network, checkpoint = load_model(name_or_path, use_ema=use_ema, device=device)
    model = Model(network, checkpoint, name_or_path)
    if guide is not None:
        attach_guide(network, guide)
        model.sampling = dataclasses.replace(
            model.sampling, guide=str(guide), guide_scale=guide_scale
        )
    return model


def zoo_models() -> dict[str, dict[str, Any]]:
    """The shipped pretrained models: name -> family, num_classes, summary, metrics ..."""
    shipped = available()
    return {name: entry for name, entry in manifest().items() if name in shipped}


def train(
    config_or_preset: RunConfig | str | Path = "dcgan-quick",
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    **changes: Any,
) -> TrainResult:
    """Train a model, as `fashiongen train` does.

    Args:
        config_or_preset: a RunConfig, a preset name (`dcgan-quick`, `ddpm` ...) or a TOML file.
        resume, overwrite, progress: as `train --resume`, `--overwrite`, no `--no-progress`.
        **changes: config values on top, by section: `out_dir="runs/x"`, `seed=1`,
            `train={"max_steps": 50}`, `data={"name": "synthetic"}`; type-checked.

    Returns:
        TrainResult: run_dir, final_checkpoint, steps, epochs, train_seconds ...
    """
    if isinstance(config_or_preset, RunConfig):
        data = config_to_dict(config_or_preset)
    else:
        data = read_toml(preset_path(config_or_preset))
    cfg = config_from_dict(deep_merge(data, changes))
    if not resume and "out_dir" not in changes and not isinstance(config_or_preset, RunConfig):
        cfg = resolve_run_name(cfg)
    return train_config(cfg, resume=resume, overwrite=overwrite, progress=progress)


def evaluate(
    source: Model | Samples | str | Path | torch.Tensor | np.ndarray,
    *,
    num_samples: int | None = None,
    labels: torch.Tensor | np.ndarray | None = None,
    dataset: str | None = None,
    ref: str = "test",
    seed: int = 0,
    use_memorisation: bool = True,
) -> dict[str, Any]:
    """FID, KID, precision/recall, coverage, class metrics and copy rate, as `fashiongen eval`.

    Args:
        source: a Model (sampled with its own settings, balanced classes), Samples, a zoo
            name, run folder, checkpoint, `.npz` or PNG folder, or uint8 images (N, C, H, W).
        num_samples: images to draw from a model (default 2000) or to read from a set.
        labels: the classes images were drawn for (images given directly).
        dataset: the real dataset (default: the model's, else fashion-mnist).
        ref, seed, use_memorisation: as `fashiongen eval`.
    """
    if isinstance(source, str | Path):
        return evaluate_source(
            source,
            num_samples=num_samples,
            ref=ref,
            seed=seed,
            dataset=dataset,
            use_memorisation=use_memorisation,
        )
    if isinstance(source, Model):
        drawn = draw_balanced(
            source.network,
            num_samples or DEFAULT_NUM_SAMPLES,
            sampling=source.checkpoint.config.sample,
            seed=seed,
        )
        images, labels = drawn.images, drawn.labels
        dataset = dataset or source.checkpoint.config.data.name
    elif isinstance(source, Samples):
        images, labels = source.images, source.labels
    else:
        images = source
    images = torch.as_tensor(images)[:num_samples]
    labels = None if labels is None else torch.as_tensor(labels)[:num_samples]
    dataset = dataset or "fashion-mnist"
    return score(
        images,
        labels=labels,
        dataset=dataset,
        ref=ref,
        seed=seed,
        featnet=resolve_featnet(None, dataset),
        use_memorisation=use_memorisation,
    )


def compare(
    runs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    num_samples: int = 2000,
    seed: int = 0,
    dataset: str | None = None,
    overwrite: bool = False,
) -> Path:
    """A comparison report of runs, checkpoints or zoo models (`fashiongen compare`):
    report.md, report.html and report.json in `out_dir`; returns report.html's path.
    Models of different datasets need one `dataset` to be scored against."""
    from fashiongen.report import compare_runs  # deferred: it imports matplotlib (0.5 s)

    return compare_runs(
        runs, out_dir, num_samples=num_samples, seed=seed, dataset=dataset, overwrite=overwrite
    )
