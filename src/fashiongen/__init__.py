"""fashiongen: train, sample, evaluate and compare generative models of fashion images.

The public API (`fashiongen.api`)::

    import fashiongen
    model = fashiongen.load("ddpm")               # a zoo name, run folder or checkpoint
    samples = model.sample(16, classes="sneaker")  # its checkpoint's own sampling settings
    samples.save("sneakers.png")

`fashiongen.train` is the training function (`fashiongen.api.train`); the training loop
itself is the package `fashiongen.training`.
"""

from fashiongen.api import Model, Samples, TrainResult, compare, evaluate, load, train, zoo_models
from fashiongen.version import __version__

__all__ = [
    "Model",
    "Samples",
    "TrainResult",
    "__version__",
    "compare",
    "evaluate",
    "load",
    "train",
    "zoo_models",
]
