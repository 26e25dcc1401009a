"""Static review of the code a student wrote, before any of it runs.

`scan_notebook` parses every cell the student could change (answer cells and
cells they added; IPython magics are first translated to the Python they run)
and reports what a graded answer may not do:

* **reference** — import a reference implementation (`course_utils.saliency`,
  `course_utils.reference`, `course_utils.sanity`, `course_utils.metrics`,
  Captum) or the grader (`course_utils.grading`);
* **tamper** — assign to or delete attributes of a module or anything reached
  from one (``torch.allclose = …``, ``np.testing.assert_allclose = …``), rebind
  a name the tests use (``checks = …``), or reach for interpreter internals
  (``__dict__``, ``__globals__``, ``setattr``, ``exec``, ``get_ipython`` and so
  on — which is also how magics and ``!shell`` lines show up);
* **system** — touch files, processes or the interpreter (``open``, ``os``,
  ``sys``, ``subprocess``, ``torch.load``, ``np.save`` …);
* **import** — import a module outside the allowed list.

A finding flags the submission for review and its auto-graded points are
withheld; it never stops the notebook from being graded. The same scan runs in
``course check`` so a student learns about it before submitting. The rules are
a tripwire, not a proof: the grader's verdict does not depend on them (it is
computed outside the student's kernel), they exist to make tampering visible.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .withheld import REFERENCE_MODULES, matching

ALLOWED_IMPORT_ROOTS = frozenset(
    {
        "torch",
        "numpy",
        "scipy",
        "math",
        "cmath",
        "statistics",
        "random",
        "time",
        "functools",
        "itertools",
        "collections",
        "typing",
        "dataclasses",
        "copy",
        "numbers",
        "operator",
        "enum",
        "abc",
        "string",
        "re",
        "fractions",
        "decimal",
        "heapq",
        "bisect",
        "warnings",
        "tqdm",
        "matplotlib",
        "altair",
        "pandas",
        "skimage",
    }
)
ALLOWED_IMPORTS = frozenset(
    {
        "course_utils",
        "course_utils.models",
        "course_utils.data",
        "course_utils.plotting",
        "course_utils.widgets",
    }
)
# What computes the answers (withheld.py), then the grader's own package.
FORBIDDEN_IMPORTS = {
    **dict.fromkeys(REFERENCE_MODULES, "reference"),
    "course_utils.grading": "tamper",
}
# The test helpers a notebook's setup cell imports; answers may call them (e.g. to
# re-run a visible check) but not touch their private parts.
PUBLIC_HELPERS = frozenset({"course_utils.grading.checks"})
FORBIDDEN_NAMES = {
    "open": "system",
    "exec": "tamper",
    "eval": "tamper",
    "compile": "tamper",
    "__import__": "tamper",
    "globals": "tamper",
    "vars": "tamper",
    "setattr": "tamper",
    "delattr": "tamper",
    "get_ipython": "tamper",
    "breakpoint": "system",
    "input": "system",
    "__builtins__": "tamper",
    "__loader__": "tamper",
    "__spec__": "tamper",
}
FORBIDDEN_ATTRS = {
    # interpreter internals
    "__dict__": "tamper",
    "__globals__": "tamper",
    "__builtins__": "tamper",
    "__code__": "tamper",
    "__closure__": "tamper",
    "__subclasses__": "tamper",
    "__bases__": "tamper",
    "__base__": "tamper",
    "__mro__": "tamper",
    "__getattribute__": "tamper",
    "__setattr__": "tamper",
    "__delattr__": "tamper",
    "__import__": "tamper",
    "__loader__": "tamper",
    "__spec__": "tamper",
    "__self__": "tamper",
    "__func__": "tamper",
    "__wrapped__": "tamper",
    "__reduce__": "tamper",
    "__reduce_ex__": "tamper",
    "__kwdefaults__": "tamper",
    "__defaults__": "tamper",
    "f_globals": "tamper",
    "f_locals": "tamper",
    "f_back": "tamper",
    "f_builtins": "tamper",
    "f_code": "tamper",
    "gi_frame": "tamper",
    "cr_frame": "tamper",
    "tb_frame": "tamper",
    "settrace": "tamper",
    "setprofile": "tamper",
    "meta_path": "tamper",
    # files, processes, the interpreter
    "os": "system",
    "sys": "system",
    "subprocess": "system",
    "builtins": "system",
    "importlib": "system",
    "_exit": "system",
    "system": "system",
    "popen": "system",
    "fork": "system",
    "kill": "system",
    "load": "system",
    "save": "system",
    "fromfile": "system",
    "tofile": "system",
    "loadtxt": "system",
    "savetxt": "system",
    "genfromtxt": "system",
    "memmap": "system",
    "hub": "system",
    "ctypeslib": "system",
    "cpp_extension": "system",
    "attrgetter": "tamper",
    "methodcaller": "tamper",
    "_C": "system",
    "ctypes": "system",
    "shutil": "system",
    "pathlib": "system",
    "pickle": "system",
    "io": "system",
    "socket": "system",
    "tempfile": "system",
    "inspect": "tamper",
    "threading": "system",
    "multiprocessing": "system",
    "glob": "system",
    "gc": "tamper",
    "marshal": "system",
}


REASONS = {
    "reference": "calls a reference implementation",
    "tamper": "tampers with the tests or the interpreter",
    "system": "reaches outside the notebook (files, processes)",
    "import": "imports a module that answers may not use",
}


@dataclass(frozen=True)
class Finding:
    """One rule an answer broke: where, what, and its category (see REASONS)."""

    where: str
    line: int
    message: str
    category: str

    def __str__(self) -> str:
        return f"{self.where}, line {self.line}: {self.message}"


@dataclass(frozen=True)
class Policy:
    """What a notebook's answers may import on top of the defaults.

    Read from the notebook metadata ``course_grading.allow_imports`` (a list of
    module names, e.g. ["course_utils.saliency"] for the sanity-check set,
    where the methods are tools, not the exercise).
    """

    allow_imports: frozenset[str] = frozenset()

    @classmethod
    def from_metadata(cls, metadata: dict) -> Policy:
        extra = (metadata or {}).get("course_grading", {}).get("allow_imports", [])
        if not isinstance(extra, list) or not all(isinstance(m, str) for m in extra):
            raise ValueError(
                "notebook metadata course_grading.allow_imports must be a list of "
                f"module names, got {extra!r}"
            )
        return cls(frozenset(extra))


def python_source(source: str) -> str:
    """Cell source as the Python IPython runs (magics become get_ipython() calls)."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 — a cell IPython cannot transform fails anyway
        return source


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(python_source(source))
    except SyntaxError:
        return None


def _root(node: ast.AST) -> str | None:
    """The name an attribute/subscript/call chain starts from (`torch` in torch.a.b)."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _is_chain(node: ast.AST) -> bool:
    """A pure attribute chain (torch.Tensor, np.testing), no calls or subscripts."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts)) or type(node).__name__


def _import_path(node: ast.Import | ast.ImportFrom, alias: ast.alias) -> str:
    """What an import binds: `import a.b` binds a; `import a.b as c` binds a.b."""
    if isinstance(node, ast.Import):
        return alias.name if alias.asname else alias.name.split(".")[0]
    return f"{'.' * node.level}{node.module or ''}.{alias.name}"


def import_bindings(tree: ast.AST) -> dict[str, str]:
    """Names bound by import statements anywhere in `tree`, and what they hold."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                names[name] = _import_path(node, alias)
    return names


def _matches(module: str, prefixes: Iterable[str]) -> str | None:
    return matching(module, prefixes)


class _Scanner(ast.NodeVisitor):
    def __init__(
        self, where: str, tainted: set[str], protected: dict[str, str], policy: Policy
    ):
        self.where = where
        self.tainted = tainted
        self.protected = protected
        self.policy = policy
        self.findings: list[Finding] = []
        self.depth = 0  # > 0 inside a function or class body
        self.direct_getattr: set[int] = set()  # getattr names that are plain calls
        self.globals_declared: set[str] = set()

    def add(self, node: ast.AST, message: str, category: str) -> None:
        self.findings.append(
            Finding(self.where, getattr(node, "lineno", 0), message, category)
        )

    # imports ---------------------------------------------------------------
    def _check_module(self, node: ast.AST, module: str) -> None:
        allowed = _matches(module, self.policy.allow_imports) or _matches(
            module, PUBLIC_HELPERS
        )
        forbidden = _matches(module, FORBIDDEN_IMPORTS)
        if forbidden and not allowed:
            self.add(node, f"imports {module}", FORBIDDEN_IMPORTS[forbidden])
        elif not (
            allowed
            or module.split(".")[0] in ALLOWED_IMPORT_ROOTS
            or module in ALLOWED_IMPORTS
            or forbidden
        ):
            self.add(node, f"imports {module}, which answers may not use", "import")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._check_module(node, alias.name)
            self._bind(
                node,
                alias.asname or alias.name.split(".")[0],
                _import_path(node, alias),
            )

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.add(node, "uses a relative import", "import")
            return
        base = node.module or ""
        for alias in node.names:
            if alias.name in FORBIDDEN_ATTRS:
                self.add(
                    node, f"imports {base}.{alias.name}", FORBIDDEN_ATTRS[alias.name]
                )
                continue
            full = f"{base}.{alias.name}"
            is_sub = base in ALLOWED_IMPORTS or _matches(full, FORBIDDEN_IMPORTS)
            self._check_module(node, full if is_sub else base)
            self._bind(node, alias.asname or alias.name, _import_path(node, alias))

    # names and attributes ----------------------------------------------------
    def _bind(self, node: ast.AST, name: str, path: str | None = None) -> None:
        """A store to `name`: flag it when it shadows a name the tests use.

        Re-importing what the setup cell imported (`import torch`) is fine.
        """
        at_top = self.depth == 0 or name in self.globals_declared
        if name in self.protected and at_top and path != self.protected[name]:
            self.add(node, f"redefines `{name}`, which the tests use", "tamper")

    def visit_Global(self, node: ast.Global) -> None:
        self.globals_declared.update(node.names)

    def _forbidden_module(self, module: str) -> str | None:
        """The category when `module` is one answers may not use, else None."""
        if _matches(module, self.policy.allow_imports) or _matches(
            module, PUBLIC_HELPERS
        ):
            return None
        prefix = _matches(module, FORBIDDEN_IMPORTS)
        return FORBIDDEN_IMPORTS[prefix] if prefix else None

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and node.id in FORBIDDEN_NAMES:
            self.add(node, f"uses {node.id}", FORBIDDEN_NAMES[node.id])
        elif node.id == "getattr" and id(node) not in self.direct_getattr:
            self.add(node, "passes getattr around (reduce(getattr, …))", "tamper")
        elif isinstance(node.ctx, ast.Load) and node.id in self.protected:
            category = self._forbidden_module(self.protected[node.id])
            if category:
                self.add(node, f"uses {node.id} ({self.protected[node.id]})", category)
        elif isinstance(node.ctx, (ast.Store, ast.Del)):
            self._bind(node, node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in FORBIDDEN_ATTRS:
            self.add(
                node, f"uses .{node.attr} ({_dotted(node)})", FORBIDDEN_ATTRS[node.attr]
            )
        elif (
            node.attr.startswith("_")
            and not node.attr.startswith("__")
            and _root(node) in self.tainted
        ):
            self.add(node, f"uses the private {_dotted(node)}", "tamper")
        elif _root(node) in self.tainted and _is_chain(node):
            category = self._forbidden_module(
                _dotted(node).replace(
                    _root(node) or "",
                    self.protected.get(_root(node) or "", _root(node) or ""),
                    1,
                )
            )
            if category:
                self.add(node, f"uses {_dotted(node)}", category)
        if isinstance(node.ctx, (ast.Store, ast.Del)) and _root(node) in self.tainted:
            verb = "assigns to" if isinstance(node.ctx, ast.Store) else "deletes"
            self.add(
                node,
                f"{verb} {_dotted(node)} (changing a module is not allowed)",
                "tamper",
            )
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if (
            isinstance(node.ctx, (ast.Store, ast.Del))
            and _root(node.value) in self.tainted
        ):
            self.add(
                node,
                f"writes into {_dotted(node.value)}[…] (a module's contents)",
                "tamper",
            )
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id == "getattr":
            self.direct_getattr.add(id(node.func))
            attr = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str)):
                self.add(node, "uses getattr with a computed name", "tamper")
            elif attr.value in FORBIDDEN_ATTRS:
                self.add(
                    node,
                    f"uses getattr(…, {attr.value!r})",
                    FORBIDDEN_ATTRS[attr.value],
                )
        self.generic_visit(node)

    # scopes --------------------------------------------------------------------
    def _scoped(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._bind(node, node.name)
        for deco in node.decorator_list:
            self.visit(deco)
        self._scoped(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._bind(node, node.name)
        self._scoped(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._scoped(node)


def _taint(trees: Sequence[ast.AST], seed: set[str]) -> set[str]:
    """Names that hold a module or something reached from one by attributes.

    Starts from every import binding and adds names assigned a pure attribute
    chain of a tainted name (``T = torch.Tensor``), until nothing changes.
    """
    tainted = set(seed)
    for tree in trees:
        tainted |= set(import_bindings(tree))
    changed = True
    while changed:
        changed = False
        for tree in trees:
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Assign)
                    and _is_chain(node.value)
                    and _root(node.value) in tainted
                ):
                    for target in node.targets:
                        if isinstance(target, ast.Name) and target.id not in tainted:
                            tainted.add(target.id)
                            changed = True
    return tainted


def scan_sources(
    untrusted: Sequence[tuple[str, str]],
    trusted: Sequence[str] = (),
    policy: Policy = Policy(),
) -> list[Finding]:
    """Findings for the student's cells.

    Args:
        untrusted: (where, source) of every cell the student wrote or could edit.
        trusted: sources of the instructor's locked cells (setup, tests); the
            names they import are the ones the tests rely on.
        policy: extra allowed imports.
    """
    trusted_trees = [t for t in (_parse(s) for s in trusted) if t is not None]
    protected: dict[str, str] = {}
    for tree in trusted_trees:
        protected.update(import_bindings(tree))
    parsed = [(where, _parse(src)) for where, src in untrusted]
    tainted = _taint([t for _, t in parsed if t is not None] + trusted_trees, set())
    findings: list[Finding] = []
    seen = set()
    for where, tree in parsed:
        if tree is None:
            continue  # a syntax error: the cell fails when it runs
        scanner = _Scanner(where, tainted, protected, policy)
        scanner.visit(tree)
        for f in scanner.findings:  # one finding per line and category
            if (f.where, f.line, f.category) not in seen:
                seen.add((f.where, f.line, f.category))
                findings.append(f)
    return findings
