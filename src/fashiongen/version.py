"""The package version, in a module of its own so that any module may import it without
importing the package's public API (`fashiongen/__init__.py` imports `fashiongen.api`)."""

__version__ = "0.1.0"  # as pyproject.toml's [project] version
