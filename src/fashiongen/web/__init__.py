"""The local web studio: `fashiongen serve` (needs the `web` extra, i.e. Gradio).

`studio` holds the logic (model cache, bounded requests, grids, interpolation) and imports
no web framework; `app` is the Gradio page over it. Nothing else in the package imports
this one: the web page depends on the library, never the reverse.
"""

from fashiongen.web.studio import Grid, ModelInfo, Strip, Studio, zoo_models

__all__ = ["Grid", "ModelInfo", "Strip", "Studio", "zoo_models"]
