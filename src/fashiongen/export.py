"""ONNX export of the networks sampling runs, and onnxruntime as a sampling backend.

Every family names its sampling networks in `ema_module_names` (G, the VAE decoder, the
U-Net, or both of a hybrid's). `export_onnx` records the arguments each one receives in a
two-image draw, then exports it with a dynamic batch axis; `use_onnx` swaps those modules
for `OnnxNetwork`s, so the families' own sampling code (samplers, guidance, the hybrid's
noising) runs unchanged around onnxruntime. Exports are cached per weights in
`~/.cache/fashiongen/onnx/`. Needs the `onnx` extra: `pip install 'fashiongen[onnx]'`.

Each file is usable without this package (docs/onnx.md): its inputs and outputs are named
for what they hold (`z`, `class_label`, `x_t`, `timestep`; `image` or `prediction`) and its
metadata says the family, image shape, value range, class names, the diffusion schedule and
prediction type, and the recommended sampler and steps. A diffusion model is also exported
whole (`export_generation_graph`): noise and labels in, images out, the sampler unrolled
for a fixed number of steps, so a client needs no sampler of its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fashiongen.checkpoint import own_sampling
from fashiongen.config import SampleConfig
from fashiongen.digests import tensors_digest
from fashiongen.errors import ConfigError
from fashiongen.files import atomic_path, cache_root
from fashiongen.models.base import Diffusion, DraftRefiner, Family
from fashiongen.version import __version__

ONNX_OPSET = 17
BACKENDS = ("torch", "onnx")
EXPORT_FORMAT = "fashiongen-onnx/2"  # named inputs and outputs, metadata
# A network's argument name -> the ONNX input's name, in the words of docs/onnx.md.
INPUT_NAMES = {"z": "z", "x_t": "x_t", "t": "timestep", "labels": "class_label"}


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            "the onnx backend needs onnxruntime: pip install 'fashiongen[onnx]'"
        ) from None
    return onnxruntime


def sampling_calls(model: Family) -> dict[str, tuple]:
    """The arguments each sampling network receives when `model` draws two images."""
    calls: dict[str, tuple] = {}
    hooks = [
        model.get_submodule(name).register_forward_pre_hook(
            lambda _module, args, name=name: calls.setdefault(name, args)
        )
        for name in model.ema_module_names
    ]
    try:
        # The family's defaults run every sampling network (a hybrid's refiner included);
        # in fp32, as the exported networks run (no `auto` probe calls them first).
        model.sample(
            2,
            generator=torch.Generator().manual_seed(0),
            sampling=dataclasses.replace(model.default_sampling(), num_steps=2, precision="fp32"),
        )
    finally:
        for hook in hooks:
            hook.remove()
    return calls


class _TensorArguments(nn.Module):
    """`network` called with the tensors of `example` only: its None arguments stay None."""

    def __init__(self, network: nn.Module, example: tuple) -> None:
        super().__init__()
        self.network = network
        self.none_at = [i for i, a in enumerate(example) if a is None]
        self.num_args = len(example)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        given = iter(tensors)
        return self.network(
            *[None if i in self.none_at else next(given) for i in range(self.num_args)]
        )


def io_names(network: nn.Module, example: tuple) -> tuple[list[str], str]:
    """The ONNX input names of the tensors in `example` and the output's name: a denoiser
    (called with a timestep) predicts, every other sampling network returns an image."""
    params = list(inspect.signature(network.forward).parameters)
    names = [INPUT_NAMES.get(params[i], params[i]) for i, a in enumerate(example) if a is not None]
    return names, "prediction" if "timestep" in names else "image"


def export_metadata(
    model: Family,
    name: str,
    *,
    sampling: SampleConfig | None = None,
    class_names: list[str] | None = None,
) -> dict[str, str]:
    """What a client needs to use network `name` of `model` without fashiongen's code."""
    sampling = sampling or own_sampling(model) or SampleConfig()
    owner, _, _ = name.rpartition(".")  # a hybrid's part ("refiner.net"): its own family
    family = model.get_submodule(owner) if owner else model
    metadata = {
        "format": EXPORT_FORMAT,
        "fashiongen_version": __version__,
        "family": model.config.name,
        "network": name,
        "image_shape": json.dumps(list(model.image_shape)),
        "value_range": "[-1, 1]",
        "num_classes": str(model.num_classes),
        "class_names": json.dumps(list(class_names or [])),
        "latent_shape": json.dumps(list(model.latent_shape)),
    }
    if isinstance(family, Diffusion):  # the sampler a client reimplements
        metadata.update(
            {
                "schedule": family.config.schedule,
                "prediction": family.config.prediction,
                "num_train_timesteps": str(family.config.num_train_timesteps),
                "recommended_sampler": sampling.sampler,
                "recommended_num_steps": str(sampling.num_steps),
                "recommended_guidance_scale": str(sampling.guidance_scale),
                "null_class_label": str(model.num_classes),
            }
        )
    if isinstance(model, DraftRefiner):
        metadata["recommended_strength"] = str(sampling.strength)
    return metadata


def _fingerprint(network: nn.Module, example: tuple, metadata: dict[str, str]) -> str:
    digest = hashlib.sha256(f"{torch.__version__} {ONNX_OPSET} {type(network).__name__}".encode())
    digest.update(json.dumps(metadata, sort_keys=True).encode())
    for a in example:
        digest.update(b"none" if a is None else f"{a.dtype}{tuple(a.shape[1:])}".encode())
    digest.update(tensors_digest(network.state_dict()).encode())
    return digest.hexdigest()[:16]


def export_onnx(
    model: Family,
    out_dir: str | Path | None = None,
    *,
    sampling: SampleConfig | None = None,
    class_names: list[str] | None = None,
) -> dict[str, Path]:
    """Export each sampling network of `model` to `out_dir/NAME-FINGERPRINT.onnx` (default:
    the user cache), batch size dynamic; a file already there for these weights is reused.
    `sampling` (default: the checkpoint's) and `class_names` go into the metadata.

    Returns:
        {module name: .onnx path}, e.g. {"generator": ...} or {"gan.generator": ...,
        "refiner.net": ...} for a hybrid.
    """
    return {
        name: path
        for name, (path, _) in _export(
            model, out_dir, sampling=sampling, class_names=class_names
        ).items()
    }


def _export(
    model: Family,
    out_dir: str | Path | None,
    *,
    sampling: SampleConfig | None = None,
    class_names: list[str] | None = None,
) -> dict[str, tuple[Path, tuple]]:
    out_dir = Path(out_dir) if out_dir is not None else cache_root() / "onnx"
    was_training = model.training
    model = model.cpu().eval()
    exported = {}
    for name, example in sampling_calls(model).items():
        network = model.get_submodule(name)
        metadata = export_metadata(model, name, sampling=sampling, class_names=class_names)
        path = out_dir / f"{name}-{_fingerprint(network, example, metadata)}.onnx"
        if not path.is_file():
            wrapper = _TensorArguments(network, example).eval()
            tensors = tuple(a for a in example if a is not None)
            inputs, output = io_names(network, example)
            with atomic_path(path) as tmp, warnings.catch_warnings():
                # The TorchScript exporter: 0.5 s a network here, against 6-8 s for
                # dynamo=True, and onnxruntime runs both graphs at the same speed.
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    wrapper,
                    tensors,
                    str(tmp),
                    input_names=inputs,
                    output_names=[output],
                    opset_version=ONNX_OPSET,
                    dynamic_axes={n: {0: "batch"} for n in [*inputs, output]},
                    dynamo=False,
                )
                _add_metadata(tmp, metadata)
        exported[name] = (path, example)
    model.train(was_training)  # exporting leaves the caller's model as it was
    return exported


# Samplers that draw no noise after the start: their unrolled graph is a function of its inputs.
DETERMINISTIC_SAMPLERS = ("ddim", "dpmpp_2m")
GENERATION_GRAPH = "generate-{num_steps}steps.onnx"


class _Generation(nn.Module):
    """A family's whole sampling from its latents: traced, the sampler's loop unrolls. The
    hybrid draws noise once more, to noise its draft (`DDPM.refine`): that draw becomes the
    input `draft_noise`, handed to the refiner's `randn` while tracing."""

    def __init__(self, model: Family, sampling: SampleConfig, *, conditional: bool) -> None:
        super().__init__()
        self.model = model
        self.sampling = sampling
        self.conditional = conditional

    def forward(self, latents: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        labels = rest[0] if self.conditional else None
        refiner = self.model.refiner if isinstance(self.model, DraftRefiner) else None
        if refiner is not None:
            draft_noise = rest[-1]
            refiner.randn = lambda *shape, generator=None: draft_noise
        try:
            return self.model.generate_from_latents(
                latents, labels=labels, sampling=self.sampling
            ).clamp(-1, 1)
        finally:
            if refiner is not None:
                del refiner.randn  # the method again


def generation_sampling(model: Family, sampling: SampleConfig | None = None) -> SampleConfig:
    """The settings a generation graph is unrolled with: the checkpoint's, with DDIM (eta 0)
    in place of a sampler that draws noise at every step."""
    sampling = sampling or own_sampling(model) or SampleConfig()
    if sampling.sampler in DETERMINISTIC_SAMPLERS and sampling.eta == 0:
        return sampling
    return dataclasses.replace(sampling, sampler="ddim", eta=0.0)


def export_generation_graph(
    model: Family,
    out_dir: str | Path,
    *,
    sampling: SampleConfig | None = None,
    class_names: list[str] | None = None,
) -> Path | None:
    """Write a diffusion model's or a hybrid's whole generation, `generate-<N>steps.onnx`.

    Inputs, float32 ~ N(0, I) unless said: `noise` (B, C, H, W), a DDPM's starting noise, or
    for the hybrid `z` (B, latent) and `draft_noise` (B, C, H, W); `class_label` (B,) int64
    for a conditional model. Output `image` (B, C, H, W) in [-1, 1]. One-pass families
    (GAN, DCGAN, VAE) have their network's file only: None.
    """
    if not isinstance(model, Diffusion | DraftRefiner):
        return None
    sampling = generation_sampling(model, sampling)
    was_training = model.training
    model = model.cpu().eval()
    seeded = torch.Generator().manual_seed(0)
    hybrid = isinstance(model, DraftRefiner)
    inputs = ["z" if hybrid else "noise"]
    example = [torch.randn(2, *model.latent_shape, generator=seeded)]
    if model.num_classes:
        inputs.append("class_label")
        example.append(torch.arange(2) % model.num_classes)
    if hybrid:
        inputs.append("draft_noise")
        example.append(torch.randn(2, *model.image_shape, generator=seeded))
    metadata = {
        **export_metadata(model, "generation", sampling=sampling, class_names=class_names),
        "sampler": sampling.sampler,
        "num_steps": str(sampling.num_steps),
        "guidance_scale": str(sampling.guidance_scale),
        "guide_scale": str(sampling.guide_scale),  # autoguidance, traced into the graph
    }
    path = Path(out_dir) / GENERATION_GRAPH.format(num_steps=sampling.num_steps)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on the unrolled loop
        torch.onnx.export(
            _Generation(model, sampling, conditional=bool(model.num_classes)),
            tuple(example),
            str(tmp),
            input_names=inputs,
            output_names=["image"],
            opset_version=ONNX_OPSET,
            dynamic_axes={n: {0: "batch"} for n in [*inputs, "image"]},
            dynamo=False,
        )
        _add_metadata(tmp, metadata)
    model.train(was_training)
    return path


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    graph = onnx.load(str(path))
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    graph.doc_string = (
        f"fashiongen {metadata['family']} {metadata['network']}: images in "
        f"{metadata['value_range']}, shape {metadata['image_shape']}"
    )
    onnx.save(graph, str(path))


class OnnxNetwork(nn.Module):
    """Runs an exported network in onnxruntime behind the torch module's own call signature;
    other attributes (e.g. a U-Net's `null_label`) still come from the torch module."""

    def __init__(
        self, path: str | Path, source: nn.Module, example: tuple, num_threads: int = 0
    ) -> None:
        super().__init__()
        ort = _require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.none_at = [i for i, a in enumerate(example) if a is None]
        object.__setattr__(self, "source", source)  # not a submodule: no weights twice

    def forward(self, *args: torch.Tensor | None) -> torch.Tensor:
        tensors = [a for i, a in enumerate(args) if i not in self.none_at]
        if len(tensors) != len(self.input_names) or any(a is None for a in tensors):
            raise ConfigError(
                "the ONNX export was made for other arguments (e.g. labels "
                "given to a network exported without them)"
            )
        feeds = {
            name: a.detach().cpu().numpy()
            for name, a in zip(self.input_names, tensors, strict=True)
        }
        return torch.from_numpy(self.session.run(None, feeds)[0])

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["source"], name)


def use_onnx(model: Family, cache: str | Path | None = None, num_threads: int = 0) -> Family:
    """Swap `model`'s sampling networks for onnxruntime ones (in place; CPU only)."""
    _require_onnxruntime()
    if model.device.type != "cpu":
        raise ConfigError("the onnx backend runs on the CPU; load the model with device='cpu'")
    for name, (path, example) in _export(model, cache).items():
        model.set_submodule(
            name, OnnxNetwork(path, model.get_submodule(name), example, num_threads)
        )
    return model
