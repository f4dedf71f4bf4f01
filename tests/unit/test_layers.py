"""The architecture's one-page map, checked against the package's imports.

`LAYERS` below is the map: the package's rooms (a module, or a subpackage with every module in
it), lowest layer first. A module may import its own layer and the layers below it, never one
above (and in "parts" no room imports another); no two modules may import each other, however
indirectly. Imports are read from the source with `ast` by tools/import_graph.py (the reader
the tool prints circles with, so there is one copy): module-level and function-level ones
alike, and `if TYPE_CHECKING:` ones too, since an annotation is a dependency a reader follows
as much as an import (there is no type-only circle left to excuse).

Every module must be on the map: a new top-level module fails here until it is given a layer;
one in a subpackage takes its package's room. docs/architecture.md draws the same map.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "fashiongen"

# (layer, rooms, what the layer knows). Rooms are named relative to the package; "__init__" is
# the package's own __init__ (the public API re-exported), a subpackage's name covers its
# modules, and "zoo.release" sits higher than the rest of "zoo" (the catalogue).
LAYERS: list[tuple[str, list[str], str]] = [
    (
        "ground",
        [
            "errors",
            "version",
            "limits",
            "digests",
            "files",
            "config",
            "precision",
            "device",
            "distributed",
            "images",
            "plots",
        ],
        "errors, typed config, files, devices and precision, image ranges; no model family",
    ),
    (
        "parts",
        ["data", "nets", "samplers"],
        "datasets, plain networks, diffusion schedules and samplers; none knows a family",
    ),
    ("metrics", ["metrics"], "features and scores of image sets; never a model"),
    ("families", ["models"], "the family interface (models.base) and one module per family"),
    (
        "a trained model at work",
        ["zoo", "checkpoint", "samples", "generate", "visuals", "editing", "edit", "evaluation"],
        "load a checkpoint, draw, write and read samples, edit, draw and score",
    ),
    (
        "jobs",
        ["training", "distill", "synth", "report", "export", "zoo.release"],
        "the training loop and distillation's runs, synthetic datasets, the comparison report, "
        "ONNX export, the zoo",
    ),
    ("api", ["api", "__init__"], "the public Python API"),
    ("interfaces", ["cli", "__main__", "web"], "the command line and the web page"),
]
# Layers whose rooms never import one another: networks apart from samplers and data.
SIBLINGS_APART = {"parts"}


def _load_import_graph():
    """tools/import_graph.py as a module (tools/ is not a package)."""
    path = ROOT / "tools" / "import_graph.py"
    spec = importlib.util.spec_from_file_location("import_graph", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


import_graph = _load_import_graph()
MODULES = import_graph.module_files(ROOT / "src")
SITES = import_graph.import_sites(MODULES)
LAYER_OF_ROOM = {room: index for index, (_, rooms, _) in enumerate(LAYERS) for room in rooms}


def _relative(module: str) -> str:
    return "__init__" if module == PACKAGE else module.removeprefix(f"{PACKAGE}.")


def room_of(module: str) -> str | None:
    """The most specific room holding `module` (a dotted fashiongen module name)."""
    name = _relative(module)
    while name not in LAYER_OF_ROOM and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in LAYER_OF_ROOM else None


def _where(site) -> str:
    return f"{MODULES[site.module].relative_to(ROOT)}:{site.line}"


def test_every_module_is_on_the_map():
    unplaced = sorted(_relative(m) for m in MODULES if room_of(m) is None)
    assert not unplaced, f"give these modules a layer in LAYERS: {unplaced}"


def test_the_map_names_only_modules_that_exist():
    relative = {_relative(m) for m in MODULES}
    stale = sorted(room for room in LAYER_OF_ROOM if room not in relative)
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_no_room_is_placed_twice():
    rooms = [room for _, layer_rooms, _ in LAYERS for room in layer_rooms]
    assert len(rooms) == len(set(rooms))


def test_no_import_circle():
    graph = import_graph.import_graph(SITES, MODULES)
    found = import_graph.circles(graph)
    cycles = [" -> ".join(import_graph.shortest_cycle(graph, c)) for c in found]
    assert not cycles, "import circles: " + "; ".join(cycles)


def upward_imports(sites) -> list[str]:
    """Each import of a higher layer's module, or of a sibling in `SIBLINGS_APART`, as
    `file:line source (layer) imports target (layer)`."""
    upward = []
    for site in sites:
        if site.target not in MODULES or site.target == site.module:
            continue
        source, target = LAYER_OF_ROOM[room_of(site.module)], LAYER_OF_ROOM[room_of(site.target)]
        if target > source or (
            target == source
            and LAYERS[source][0] in SIBLINGS_APART
            and room_of(site.module) != room_of(site.target)
        ):
            upward.append(
                f"{_where(site)} {_relative(site.module)} ({LAYERS[source][0]}) "
                f"imports {_relative(site.target)} ({LAYERS[target][0]})"
            )
    return upward


def test_imports_point_down():
    upward = upward_imports(SITES)
    assert not upward, "imports against the map:\n" + "\n".join(upward)


def _site(source: str, target: str, **scope: bool):
    return import_graph.ImportSite(
        module=f"{PACKAGE}.{source}",
        target=f"{PACKAGE}.{target}",
        line=1,
        in_function=scope.get("in_function", False),
        type_checking_only=scope.get("type_checking_only", False),
    )


def test_imports_against_the_map_are_caught():
    """The check's own check: a type-only import counts, as does one between siblings."""
    sites = [
        _site("precision", "models.base", type_checking_only=True),
        _site("nets.unet", "samplers.schedules", in_function=True),
        _site("models.ddpm", "samplers"),
        _site("samplers.sampling", "samplers.schedules"),
    ]
    assert upward_imports(sites) == [
        "src/fashiongen/precision.py:1 precision (ground) imports models.base (families)",
        "src/fashiongen/nets/unet.py:1 nets.unet (parts) imports samplers.schedules (parts)",
    ]
