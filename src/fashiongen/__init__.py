"""fashiongen: train, sample, evaluate and compare generative models of fashion images.

The public API (`fashiongen.api`)::

    import fashiongen
    model = fashiongen.load("ddpm")               # a zoo name, run folder or checkpoint
    samples = model.sample(16, classes="sneaker")  # its checkpoint's own sampling settings
    samples.save("sneakers.png")

`fashiongen.train` is the training function; the module of the training loop is imported as
`from fashiongen.train import ...` (it is loaded first, so the function's name stays bound).
"""

__version__ = "0.1.0"

import fashiongen.train  # noqa: E402, F401 - before the function of that name is bound
from fashiongen.api import (  # noqa: E402
    Model,
    Samples,
    TrainResult,
    compare,
    evaluate,
    load,
    train,
    zoo_models,
)

__all__ = ["Model", "Samples", "TrainResult", "__version__", "compare", "evaluate", "load",
           "train", "zoo_models"]
