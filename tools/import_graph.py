"""The package's import graph, read from the source: import circles and function-level imports.

Every module under src/fashiongen is parsed with `ast` (no import runs). Each `import` and
`from ... import` naming a fashiongen module becomes an edge, wherever it stands (module
level, inside a function, or under `if TYPE_CHECKING:`); `from fashiongen.x import y` points
at `fashiongen.x.y` when that is a module, else at `fashiongen.x` (a package's `__init__`).
Implicit imports of parent packages are not edges: Python runs every parent `__init__`
first, so counting them would put each module in a circle with its package.

    python tools/import_graph.py                  # circles (strongly connected components)
    python tools/import_graph.py --function-level # also every import inside a function
    python tools/import_graph.py --runtime        # leave out `if TYPE_CHECKING:` imports

Exit status 1 when there is a circle, so the script can gate a commit.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "fashiongen"
SOURCE_ROOT = Path(__file__).resolve().parent.parent / "src"


@dataclass(frozen=True)
class ImportSite:
    """One import statement: where it is, what it names, and in which scope."""

    module: str  # the importing module
    target: str  # the fashiongen module it names, or the external top-level name
    line: int
    in_function: bool
    type_checking_only: bool


def module_files(root: Path = SOURCE_ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    files = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The deepest known fashiongen module that `name` (a dotted path) lies in."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict[str, Path]
) -> list[str]:
    """The modules one import statement names (external ones by their top-level name)."""
    if isinstance(node, ast.Import):
        return [
            _resolve(a.name, modules) if a.name.split(".")[0] == PACKAGE else a.name.split(".")[0]
            for a in node.names
        ]
    base = node.module or ""
    if node.level:  # relative: from the importing module's package
        package = module if is_package else module.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            package = package.rsplit(".", 1)[0]
        base = f"{package}.{base}" if base else package
    if base.split(".")[0] != PACKAGE:
        return [base.split(".")[0]]
    return [_resolve(f"{base}.{a.name}", modules) for a in node.names]


def import_sites(modules: dict[str, Path]) -> list[ImportSite]:
    """Every import statement of every module, with its scope."""
    sites = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        _visit(tree, module, is_package, modules, sites, in_function=False, guarded=False)
    return sites


def _visit(
    node: ast.AST,
    module: str,
    is_package: bool,
    modules: dict[str, Path],
    sites: list[ImportSite],
    *,
    in_function: bool,
    guarded: bool,
) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            sites += [
                ImportSite(module, target, child.lineno, in_function, guarded)
                for target in _targets(child, module, is_package, modules)
            ]
            continue
        inner = in_function or isinstance(
            child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        guard = guarded or (isinstance(child, ast.If) and _is_type_checking(child.test))
        _visit(child, module, is_package, modules, sites, in_function=inner, guarded=guard)


def import_graph(
    sites: list[ImportSite], modules: dict[str, Path], *, runtime_only: bool = False
) -> dict[str, set[str]]:
    """Module -> the fashiongen modules it imports (no self-edges)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for site in sites:
        if (
            site.target in modules
            and site.target != site.module
            and not (runtime_only and site.type_checking_only)
        ):
            graph[site.module].add(site.target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), largest first."""
    search = _Tarjan(graph)
    sys.setrecursionlimit(max(1000, 4 * len(graph)))
    for v in sorted(graph):
        if v not in search.index:
            search.connect(v)
    return sorted(search.found, key=lambda c: (-len(c), c))


class _Tarjan:
    """The state of one depth-first search for strongly connected components."""

    def __init__(self, graph: dict[str, set[str]]) -> None:
        self.graph = graph
        self.index: dict[str, int] = {}
        self.low: dict[str, int] = {}
        self.stack: list[str] = []
        self.on_stack: set[str] = set()
        self.found: list[list[str]] = []

    def connect(self, v: str) -> None:
        self.index[v] = self.low[v] = len(self.index)
        self.stack.append(v)
        self.on_stack.add(v)
        for w in sorted(self.graph[v]):
            if w not in self.index:
                self.connect(w)
                self.low[v] = min(self.low[v], self.low[w])
            elif w in self.on_stack:
                self.low[v] = min(self.low[v], self.index[w])
        if self.low[v] == self.index[v]:
            self._pop_component(v)

    def _pop_component(self, v: str) -> None:
        component = []
        while True:
            w = self.stack.pop()
            self.on_stack.discard(w)
            component.append(w)
            if w == v:
                break
        if len(component) > 1:
            self.found.append(sorted(component))


def shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One shortest cycle through the component's first module, for the report."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return component


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--function-level", action="store_true", help="list every import inside a function"
    )
    parser.add_argument(
        "--runtime", action="store_true", help="leave out imports under `if TYPE_CHECKING:`"
    )
    args = parser.parse_args(argv)
    modules = module_files()
    sites = import_sites(modules)
    graph = import_graph(sites, modules, runtime_only=args.runtime)
    found = circles(graph)
    print(
        f"{len(modules)} modules, {sum(map(len, graph.values()))} internal edges, "
        f"{len(found)} circle(s)"
    )
    for component in found:
        print(f"\ncircle of {len(component)} modules: {', '.join(component)}")
        print("  e.g. " + " -> ".join(shortest_cycle(graph, component)))
    in_function = list({(s.module, s.line): s for s in sites if s.in_function}.values())
    print(
        f"\n{len(in_function)} function-level import statements "
        f"({sum(s.target in modules for s in in_function)} of fashiongen modules)"
    )
    if args.function_level:
        for s in in_function:
            path = modules[s.module].relative_to(SOURCE_ROOT.parent)
            print(f"  {path}:{s.line}  {s.target}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
