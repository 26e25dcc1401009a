"""No import circle anywhere in course_utils, found from the source (AST).

Every `import` / `from … import` of a course_utils module counts, at module
level and inside functions alike: an import moved into a function hides a
circle from Python's import machinery, not from this graph.
"""

import ast
from pathlib import Path

import course_utils

PACKAGE = Path(course_utils.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("course_utils", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute name of a `from X import …`'s X (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph() -> dict[str, set[str]]:
    """{module: course_utils modules it imports}, from every .py file's AST.

    `from pkg import name` counts as an import of `pkg.name` when that is a
    module, else of `pkg`. A package's `__init__` is its own node.
    """
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(node, module, is_package)
                names = [
                    f"{source}.{alias.name}"
                    if f"{source}.{alias.name}" in files
                    else source
                    for alias in node.names
                ]
            else:
                continue
            for name in names:
                # `import a.b.c` imports a.b.c; the nearest known module counts
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name.startswith("course_utils") and name != module:
                    edges.add(name)
        graph[module] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with a cycle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_a_cycle(graph, component) for component in components]


def _a_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest circle a → … → a inside a strongly connected component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle in component {sorted(component)}")


def test_the_cycle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    # module level, relative
    assert "course_utils.saliency.core" in graph["course_utils.saliency.occlusion"]
    # inside a function: gradient_shap.resolve_distribution's `from .. import data`
    assert "course_utils.data" in graph["course_utils.saliency.gradient_shap"]


def test_no_import_cycle_in_course_utils():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(
        " → ".join(cycle) for cycle in cycles
    )
