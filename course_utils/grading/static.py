"""Static review of the code a student wrote, before any of it runs.

`scan_sources` parses every cell the student could change (answer cells and
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

The review is linear in the answers' size and bounded: past MAX_SOURCE_CHARS
characters or MAX_NODES nodes, nesting Python cannot parse, or a deadline, it
gives a **review** finding (a person reads the answers). `review` runs it off
the event loop, so no submission's review delays another's deadline.
"""

from __future__ import annotations

import ast
import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .withheld import REFERENCE_MODULES, matching

ALLOWED_IMPORT_ROOTS = frozenset(
    (
        "torch", "numpy", "scipy", "math", "cmath", "statistics", "random", "time",
        "functools", "itertools", "collections", "typing", "dataclasses", "copy",
        "numbers", "operator", "enum", "abc", "string", "re", "fractions", "decimal",
        "heapq", "bisect", "warnings", "tqdm", "matplotlib", "altair", "pandas",
        "skimage"
    )
)
ALLOWED_IMPORTS = frozenset(
    ("course_utils", "course_utils.models", "course_utils.data")
    + ("course_utils.plotting", "course_utils.widgets")
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
    **dict.fromkeys(("open", "breakpoint", "input"), "system"),
    **dict.fromkeys(
        (
            "exec", "eval", "compile", "__import__", "globals", "vars", "setattr",
            "delattr", "get_ipython", "__builtins__", "__loader__", "__spec__"
        ),
        "tamper",
    ),
}
FORBIDDEN_ATTRS = {
    # interpreter internals
    **dict.fromkeys(
        (
            "__dict__", "__globals__", "__builtins__", "__code__", "__closure__",
            "__subclasses__", "__bases__", "__base__", "__mro__", "__getattribute__",
            "__setattr__", "__delattr__", "__import__", "__loader__", "__spec__",
            "__self__", "__func__", "__wrapped__", "__reduce__", "__reduce_ex__",
            "__kwdefaults__", "__defaults__", "f_globals", "f_locals", "f_back",
            "f_builtins", "f_code", "gi_frame", "cr_frame", "tb_frame", "settrace",
            "setprofile", "meta_path", "attrgetter", "methodcaller", "inspect", "gc"
        ),
        "tamper",
    ),
    # files, processes, the interpreter
    **dict.fromkeys(
        (
            "os", "sys", "subprocess", "builtins", "importlib", "_exit", "system",
            "popen", "fork", "kill", "load", "save", "fromfile", "tofile", "loadtxt",
            "savetxt", "genfromtxt", "memmap", "hub", "ctypeslib", "cpp_extension",
            "_C", "ctypes", "shutil", "pathlib", "pickle", "io", "socket", "tempfile",
            "threading", "multiprocessing", "glob", "marshal"
        ),
        "system",
    ),
}

# Bounds on what one review reads: a student's answers are a few kilobytes.
MAX_SOURCE_CHARS = 250_000  # characters of answer cells, all together
MAX_NODES = 250_000  # syntax-tree nodes of answer cells, all together
# IPython rewrites one magic per pass over the whole cell: magic-like lines × the
# cell's characters is what it reads (500 lines of `%time x` took 4.5 s).
MAX_MAGIC_WORK = 1_000_000
_MAGIC = re.compile(r"[%?]|!(?!=)|^\s*[,;/]")  # a line IPython may rewrite
REVIEW_TIMEOUT = 20.0  # seconds one submission's review may take (review())
_REVIEW_GRACE = 1.0  # seconds review() waits past it for the review to stop itself
_CHECK_EVERY = 1024  # steps between two looks at the clock
_MAX_DOTTED = 256  # characters of a dotted name kept in a finding
_TOO_LARGE = (
    "the answers are too large to review ({} a review reads): "
    "a person reviews this cell and the ones after it"
)

REASONS = {
    "reference": "calls a reference implementation",
    "tamper": "tampers with the tests or the interpreter",
    "system": "reaches outside the notebook (files, processes)",
    "import": "imports a module that answers may not use",
    "review": "could not be reviewed within its bounds (too large, too deep, too slow)",
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


class _Unreviewable(Exception):
    """The review cannot read this within its bounds; the message says why."""


class _Budget:
    """The review's work counter (one step per node visited) and its deadline."""

    def __init__(self, deadline: float | None = None):
        self.steps = 0
        self.deadline = deadline  # a time.monotonic() value, or None

    def tick(self) -> None:
        if (
            self.deadline is not None
            and self.steps % _CHECK_EVERY == 0
            and time.monotonic() > self.deadline
        ):
            raise _Unreviewable("the review ran out of time; a person reviews it")
        self.steps += 1


def _parse(source: str, student: bool = True) -> ast.Module | None:
    """The cell's syntax tree; None when it cannot run (a syntax error).

    A student's cell nested deeper than Python parses raises _Unreviewable.
    """
    try:
        return ast.parse(python_source(source))
    except (SyntaxError, ValueError):
        return None
    except (RecursionError, MemoryError) as exc:
        if not student:
            return None
        what = f"too deeply nested to review ({type(exc).__name__} while parsing)"
        raise _Unreviewable(f"{what}: a person reviews this cell") from None


_LINKS = (ast.Attribute, ast.Subscript, ast.Call)


class _Chains:
    """Where attribute chains start, and their dotted names, each node computed once.

    Every link of a chain ``a.b.c…`` asks these questions; a walk to the chain's
    start per link would make the review quadratic in the chain's length.
    """

    def __init__(self, budget: _Budget) -> None:
        self.budget = budget  # one step per link walked
        self._roots: dict[int, str | None] = {}
        self._pure: dict[int, bool] = {}
        self._names: dict[int, str] = {}

    def _walk(self, node: ast.AST, links: tuple, memo: dict) -> list[ast.AST]:
        """The links from `node` down to a known one or to the chain's start."""
        path = []
        while isinstance(node, links) and id(node) not in memo:
            self.budget.tick()
            path.append(node)
            node = node.func if isinstance(node, ast.Call) else node.value
        return path + [node]

    def root(self, node: ast.AST) -> str | None:
        """The name a chain starts from (`torch` in torch.a(x)[0].b)."""
        *path, node = self._walk(node, _LINKS, self._roots)
        name = node.id if isinstance(node, ast.Name) else None
        found = self._roots.get(id(node), name)  # a known link, or where a chain starts
        self._roots.update((id(link), found) for link in path)
        return found

    def is_chain(self, node: ast.AST) -> bool:
        """A pure attribute chain (torch.Tensor, np.testing), no calls or subscripts."""
        *path, node = self._walk(node, (ast.Attribute,), self._pure)
        found = self._pure.get(id(node), isinstance(node, ast.Name))
        self._pure.update((id(link), found) for link in path)
        return found

    def dotted(self, node: ast.AST) -> str:
        """`torch.nn.Module` for that chain; past _MAX_DOTTED characters it ends in …"""
        *path, node = self._walk(node, (ast.Attribute,), self._names)
        text = self._names.get(id(node), node.id if isinstance(node, ast.Name) else "")
        for link in reversed(path):
            if not text.endswith("…"):
                text = f"{text}.{link.attr}" if text else link.attr
                if len(text) > _MAX_DOTTED:
                    text = text[:_MAX_DOTTED] + "…"
            self._names[id(link)] = text
        return text or type(node).__name__


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


_Visit = list[tuple[ast.AST, int]]  # nodes still to visit, with their scope depth
_Cells = Sequence[tuple[str, str]]  # (where, source) of each cell


class _Scanner:
    """The rules applied to one cell in source order (a stack, not recursion: any
    depth that parsed is scanned without reaching Python's recursion limit)."""

    def __init__(
        self,
        where: str,
        tainted: set[str],
        protected: dict[str, str],
        policy: Policy,
        budget: _Budget,
    ):
        self.where, self.tainted, self.protected = where, tainted, protected
        self.policy, self.budget = policy, budget
        self.chains = _Chains(budget)
        self.findings: list[Finding] = []
        self.depth = 0  # > 0 inside a function or class body
        self.direct_getattr: set[int] = set()  # getattr names that are plain calls
        self.globals_declared: set[str] = set()

    def scan(self, tree: ast.AST) -> None:
        """Visit every node once, parents before children (as ast.NodeVisitor)."""
        stack: _Visit = [(tree, 0)]
        while stack:
            node, self.depth = stack.pop()
            self.budget.tick()
            visit = getattr(self, f"visit_{type(node).__name__}", None)
            children = visit(node) if visit else self._children(node)
            stack.extend(reversed(children))

    def _children(self, node: ast.AST, inside: int = 0) -> _Visit:
        """`node`'s children to visit next, `inside` scopes deeper than `node`."""
        return [(child, self.depth + inside) for child in ast.iter_child_nodes(node)]

    def add(self, node: ast.AST, message: str, category: str) -> None:
        line = getattr(node, "lineno", 0)
        self.findings.append(Finding(self.where, line, message, category))

    # imports ---------------------------------------------------------------
    def _check_module(self, node: ast.AST, module: str) -> None:
        allowed = matching(module, self.policy.allow_imports) or matching(
            module, PUBLIC_HELPERS
        )
        forbidden = matching(module, FORBIDDEN_IMPORTS)
        if forbidden and not allowed:
            self.add(node, f"imports {module}", FORBIDDEN_IMPORTS[forbidden])
        elif not (
            allowed
            or module.split(".")[0] in ALLOWED_IMPORT_ROOTS
            or module in ALLOWED_IMPORTS
            or forbidden
        ):
            self.add(node, f"imports {module}, which answers may not use", "import")

    def visit_Import(self, node: ast.Import) -> _Visit:
        for alias in node.names:
            self._check_module(node, alias.name)
            name = alias.asname or alias.name.split(".")[0]
            self._bind(node, name, _import_path(node, alias))
        return []

    def visit_ImportFrom(self, node: ast.ImportFrom) -> _Visit:
        if node.level:
            self.add(node, "uses a relative import", "import")
            return []
        base = node.module or ""
        for alias in node.names:
            if alias.name in FORBIDDEN_ATTRS:
                category = FORBIDDEN_ATTRS[alias.name]
                self.add(node, f"imports {base}.{alias.name}", category)
                continue
            full = f"{base}.{alias.name}"
            is_sub = base in ALLOWED_IMPORTS or matching(full, FORBIDDEN_IMPORTS)
            self._check_module(node, full if is_sub else base)
            self._bind(node, alias.asname or alias.name, _import_path(node, alias))
        return []

    # names and attributes ----------------------------------------------------
    def _bind(self, node: ast.AST, name: str, path: str | None = None) -> None:
        """A store to `name`: flag it when it shadows a name the tests use.

        Re-importing what the setup cell imported (`import torch`) is fine.
        """
        at_top = self.depth == 0 or name in self.globals_declared
        if name in self.protected and at_top and path != self.protected[name]:
            self.add(node, f"redefines `{name}`, which the tests use", "tamper")

    def visit_Global(self, node: ast.Global) -> _Visit:
        self.globals_declared.update(node.names)
        return []

    def _forbidden_module(self, module: str) -> str | None:
        """The category when `module` is one answers may not use, else None."""
        if matching(module, self.policy.allow_imports) or matching(
            module, PUBLIC_HELPERS
        ):
            return None
        prefix = matching(module, FORBIDDEN_IMPORTS)
        return FORBIDDEN_IMPORTS[prefix] if prefix else None

    def visit_Name(self, node: ast.Name) -> _Visit:
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
        return []

    def visit_Attribute(self, node: ast.Attribute) -> _Visit:
        root, dotted = self.chains.root(node), self.chains.dotted
        if node.attr in FORBIDDEN_ATTRS:
            self.add(
                node, f"uses .{node.attr} ({dotted(node)})", FORBIDDEN_ATTRS[node.attr]
            )
        elif (
            node.attr.startswith("_")
            and not node.attr.startswith("__")
            and root in self.tainted
        ):
            self.add(node, f"uses the private {dotted(node)}", "tamper")
        elif root in self.tainted and self.chains.is_chain(node):
            category = self._forbidden_module(
                dotted(node).replace(
                    root or "", self.protected.get(root or "", root or ""), 1
                )
            )
            if category:
                self.add(node, f"uses {dotted(node)}", category)
        if isinstance(node.ctx, (ast.Store, ast.Del)) and root in self.tainted:
            verb = "assigns to" if isinstance(node.ctx, ast.Store) else "deletes"
            self.add(
                node,
                f"{verb} {dotted(node)} (changing a module is not allowed)",
                "tamper",
            )
        return self._children(node)

    def visit_Subscript(self, node: ast.Subscript) -> _Visit:
        if (
            isinstance(node.ctx, (ast.Store, ast.Del))
            and self.chains.root(node.value) in self.tainted
        ):
            module = self.chains.dotted(node.value)
            self.add(node, f"writes into {module}[…] (a module's contents)", "tamper")
        return self._children(node)

    def visit_Call(self, node: ast.Call) -> _Visit:
        if isinstance(node.func, ast.Name) and node.func.id == "getattr":
            self.direct_getattr.add(id(node.func))
            attr = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str)):
                self.add(node, "uses getattr with a computed name", "tamper")
            elif attr.value in FORBIDDEN_ATTRS:
                category = FORBIDDEN_ATTRS[attr.value]
                self.add(node, f"uses getattr(…, {attr.value!r})", category)
        return self._children(node)

    # scopes --------------------------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef) -> _Visit:
        """Decorators run in the enclosing scope; then the whole def one deeper."""
        self._bind(node, node.name)
        return [(deco, self.depth) for deco in node.decorator_list] + self._children(
            node, inside=1
        )

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> _Visit:
        self._bind(node, node.name)
        return self._children(node, inside=1)

    def visit_Lambda(self, node: ast.Lambda) -> _Visit:
        return self._children(node, inside=1)


def _taint(trees: Sequence[ast.AST], seed: set[str], budget: _Budget) -> set[str]:
    """Names that hold a module or something reached from one by attributes.

    Starts from every import binding and adds names assigned a pure attribute
    chain of a tainted name (``T = torch.Tensor``), and so on along such
    assignments: one walk records who is assigned from whom, one graph search
    follows it (linear; a re-walk per newly tainted name was quadratic).
    """
    chains = _Chains(budget)
    tainted = set(seed)
    assigned_from: dict[str, list[str]] = {}  # root name → names assigned a chain
    for tree in trees:
        for node in ast.walk(tree):
            budget.tick()
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                tainted.update(a.asname or a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.Assign) and chains.is_chain(node.value):
                names = assigned_from.setdefault(chains.root(node.value) or "", [])
                names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    todo = list(tainted)
    while todo:
        budget.tick()
        for name in assigned_from.pop(todo.pop(), ()):
            if name not in tainted:
                tainted.add(name)
                todo.append(name)
    return tainted


def _parse_untrusted(
    untrusted: _Cells, budget: _Budget
) -> tuple[list[tuple[str, ast.Module]], list[Finding]]:
    """The trees of the cells a review reads, and a finding for each it cannot.

    It reads cells in order up to MAX_SOURCE_CHARS characters, MAX_MAGIC_WORK
    and MAX_NODES syntax nodes in all; the cell that goes past one, and every
    cell after it, is left to a person.
    """
    parsed, findings, chars, magic, nodes = [], [], 0, 0, 0
    for where, source in untrusted:
        chars += len(source)
        magic += len(source) * sum(bool(_MAGIC.search(s)) for s in source.splitlines())
        size = ""
        if chars > MAX_SOURCE_CHARS:
            size = f"{chars:,} characters, over the {MAX_SOURCE_CHARS:,}"
        elif magic > MAX_MAGIC_WORK:
            size = f"IPython magics × characters, over the {MAX_MAGIC_WORK:,}"
        if size:
            findings.append(Finding(where, 1, _TOO_LARGE.format(size), "review"))
            break
        try:
            tree = _parse(source)
        except _Unreviewable as exc:
            findings.append(Finding(where, 1, str(exc), "review"))
            continue
        if tree is None:
            continue  # a syntax error: the cell fails when it runs
        for _ in ast.walk(tree):
            budget.tick()
            nodes += 1
        if nodes > MAX_NODES:
            size = f"over the {MAX_NODES:,} syntax nodes"
            findings.append(Finding(where, 1, _TOO_LARGE.format(size), "review"))
            break
        parsed.append((where, tree))
    return parsed, findings


def scan_sources(
    untrusted: Sequence[tuple[str, str]],
    trusted: Sequence[str] = (),
    policy: Policy = Policy(),
    *,
    deadline: float | None = None,
) -> list[Finding]:
    """Findings for the student's cells.

    Linear in the size of the sources and bounded by MAX_SOURCE_CHARS and
    MAX_NODES; what it cannot read within them (or before `deadline`, a
    time.monotonic() value) becomes a "review" finding, never an exception.

    Args:
        untrusted: (where, source) of every cell the student wrote or could edit.
        trusted: sources of the instructor's locked cells (setup, tests); the
            names they import are the ones the tests rely on.
        policy: extra allowed imports.
        deadline: when to stop reviewing; None for no time bound.
    """
    return _review(untrusted, trusted, policy, _Budget(deadline))


def _review(
    untrusted: _Cells, trusted: Sequence[str], policy: Policy, budget: _Budget
) -> list[Finding]:
    """scan_sources, counting its steps in `budget` (the tests read the count)."""
    found: list[Finding] = []
    unread: list[Finding] = []  # cells the review cannot read, each with why
    try:
        trees = [t for t in (_parse(s, student=False) for s in trusted) if t]
        protected: dict[str, str] = {}
        for tree in trees:
            protected.update(import_bindings(tree))
        parsed, unread = _parse_untrusted(untrusted, budget)
        tainted = _taint([t for _, t in parsed] + trees, set(), budget)
        for where, tree in parsed:
            scanner = _Scanner(where, tainted, protected, policy, budget)
            scanner.scan(tree)
            found += scanner.findings
    except _Unreviewable as exc:
        found.append(Finding("the answers", 0, str(exc), "review"))
    found += unread
    findings, seen = [], set()
    for f in found:  # one finding per line and category
        if (f.where, f.line, f.category) not in seen:
            seen.add((f.where, f.line, f.category))
            findings.append(f)
    return findings


async def review(
    untrusted: Sequence[tuple[str, str]],
    trusted: Sequence[str] = (),
    policy: Policy = Policy(),
    timeout: float = REVIEW_TIMEOUT,
) -> list[Finding]:
    """scan_sources in a worker thread, so the event loop never waits on it.

    Past `timeout` seconds the review stops itself; should it not (a parse that
    does not return), a "review" finding says that it timed out.
    """
    deadline = time.monotonic() + timeout
    work = asyncio.to_thread(scan_sources, untrusted, trusted, policy, deadline=deadline)
    try:
        return await asyncio.wait_for(work, timeout + _REVIEW_GRACE)
    except TimeoutError:
        message = f"the review did not finish within {timeout:g} s; a person reviews it"
        return [Finding("the answers", 0, message, "review")]
