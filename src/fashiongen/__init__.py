"""fashiongen: train, sample, evaluate and compare generative models of fashion images."""

__version__ = "0.1.0"
