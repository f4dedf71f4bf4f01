"""ONNX export of the networks sampling runs, and onnxruntime as a sampling backend.

Every family names its sampling networks in `ema_module_names` (G, the VAE decoder, the
U-Net, or both of a hybrid's). `export_onnx` records the arguments each one receives in a
two-image draw, then exports it with a dynamic batch axis; `use_onnx` swaps those modules
for `OnnxNetwork`s, so the families' own sampling code (samplers, guidance, the hybrid's
noising) runs unchanged around onnxruntime. Exports are cached per weights in
`~/.cache/fashiongen/onnx/`. Needs the `onnx` extra: `pip install 'fashiongen[onnx]'`.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fashiongen.checkpoint import atomic_path
from fashiongen.config import SampleConfig
from fashiongen.data.sources import cache_dir
from fashiongen.errors import ConfigError
from fashiongen.models.base import Family

ONNX_OPSET = 17
BACKENDS = ("torch", "onnx")


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("the onnx backend needs onnxruntime: pip install 'fashiongen[onnx]'"
                          ) from None
    return onnxruntime


def sampling_calls(model: Family) -> dict[str, tuple]:
    """The arguments each sampling network receives when `model` draws two images."""
    calls: dict[str, tuple] = {}
    hooks = [model.get_submodule(name).register_forward_pre_hook(
        lambda _module, args, name=name: calls.setdefault(name, args))
        for name in model.ema_module_names]
    try:
        # A hybrid refines only up to its max_strength; the others ignore strength.
        strength = getattr(model.config, "max_strength", SampleConfig.strength)
        model.sample(2, generator=torch.Generator().manual_seed(0),
                     sampling=SampleConfig(num_steps=2, strength=strength))
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
        return self.network(*[None if i in self.none_at else next(given)
                              for i in range(self.num_args)])


def _fingerprint(network: nn.Module, example: tuple) -> str:
    digest = hashlib.sha256(f"{torch.__version__} {ONNX_OPSET} {type(network).__name__}".encode())
    for a in example:
        digest.update(b"none" if a is None else f"{a.dtype}{tuple(a.shape[1:])}".encode())
    for key, value in network.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def export_onnx(model: Family, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Export each sampling network of `model` to `out_dir/NAME-FINGERPRINT.onnx` (default:
    the user cache), batch size dynamic; a file already there for these weights is reused.

    Returns:
        {module name: .onnx path}, e.g. {"generator": ...} or {"gan.generator": ...,
        "refiner.net": ...} for a hybrid.
    """
    return {name: path for name, (path, _) in _export(model, out_dir).items()}


def _export(model: Family, out_dir: str | Path | None) -> dict[str, tuple[Path, tuple]]:
    out_dir = Path(out_dir) if out_dir is not None else cache_dir("onnx")
    was_training = model.training
    model = model.cpu().eval()
    exported = {}
    for name, example in sampling_calls(model).items():
        network = model.get_submodule(name)
        path = out_dir / f"{name}-{_fingerprint(network, example)}.onnx"
        if not path.is_file():
            wrapper = _TensorArguments(network, example).eval()
            tensors = tuple(a for a in example if a is not None)
            inputs = [f"input{i}" for i in range(len(tensors))]
            with atomic_path(path) as tmp, warnings.catch_warnings():
                # The TorchScript exporter: 0.5 s a network here, against 6-8 s for
                # dynamo=True, and onnxruntime runs both graphs at the same speed.
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapper, tensors, str(tmp), input_names=inputs,
                                  output_names=["output"], opset_version=ONNX_OPSET,
                                  dynamic_axes={n: {0: "batch"} for n in [*inputs, "output"]},
                                  dynamo=False)
        exported[name] = (path, example)
    model.train(was_training)  # exporting leaves the caller's model as it was
    return exported


class OnnxNetwork(nn.Module):
    """Runs an exported network in onnxruntime behind the torch module's own call signature;
    other attributes (e.g. a U-Net's `null_label`) still come from the torch module."""

    def __init__(self, path: str | Path, source: nn.Module, example: tuple,
                 num_threads: int = 0) -> None:
        super().__init__()
        ort = _require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.none_at = [i for i, a in enumerate(example) if a is None]
        object.__setattr__(self, "source", source)  # not a submodule: no weights twice

    def forward(self, *args: torch.Tensor | None) -> torch.Tensor:
        tensors = [a for i, a in enumerate(args) if i not in self.none_at]
        if len(tensors) != len(self.input_names) or any(a is None for a in tensors):
            raise ConfigError("the ONNX export was made for other arguments (e.g. labels "
                              "given to a network exported without them)")
        feeds = {name: a.detach().cpu().numpy()
                 for name, a in zip(self.input_names, tensors, strict=True)}
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
        model.set_submodule(name, OnnxNetwork(path, model.get_submodule(name), example,
                                              num_threads))
    return model
