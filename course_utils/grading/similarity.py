"""Copying detected, not access withheld: how alike two answers are.

The course ships its lecture notebooks and `course_utils` in full from week
one, so a student can copy the course's own implementation of a question (or
a classmate's answer). This module says which answers look copied, for a
person to judge; it never changes a score. It is what MOSS and JPlag do for
programming courses, on one answer cell at a time:

1. **Normalise.** The answer is parsed with `ast` (IPython magics translated
   first), so comments, docstrings, blank lines and layout are gone. Every
   statement becomes a token sequence read off its syntax tree in pre-order:
   node kinds (``Call``, ``Subscript``, ``BinOp`` …), operators, attribute and
   keyword names (``.detach``, ``dim=`` — the library's API, which a renamer
   keeps), numbers, and ``V`` for every identifier the student chooses
   (variables, arguments, function names), ``S`` for every string. A copy
   with its names changed reads the same.
2. **Fingerprint.** The k-grams (``K = 5`` tokens) of each statement, hashed
   (Schleimer, Wilkerson & Aiken, "Winnowing: local algorithms for document
   fingerprinting", SIGMOD 2003). Grams are taken within a statement, never
   across two, and kept as a multiset, so **reordering statements changes
   nothing**. Answers are a few hundred tokens, so every gram is kept (a
   winnowing window of 1): winnowing saves storage on large corpora at the
   cost of missing matches shorter than its window, which here would be most
   of an answer. The grams of the released stub (the ``def`` line and
   ``raise NotImplementedError()`` every student gets) are removed first,
   as MOSS removes a base file.
3. **Compare.** ``score = |A ∩ B| / min(|A|, |B|)`` over the multisets (the
   share of the smaller side found in the other: a copy padded with extra
   code still scores high). Pairs at or over ``threshold`` (default
   `THRESHOLD`) are listed, each answer against the course's reference units
   (every function of the modules that compute the set's answers, and the
   model answer) and against every classmate's answer to the same question.

**Too short to tell apart:** an answer with fewer than `MIN_GRAMS` (25) grams
left after the stub's are removed is not compared. A one-line answer has
about one correct form and two honest students write it alike: ps1's
``input_x_gradient`` (one line: the input times its gradient) is
10 grams, a short answer (one string or number) 1, the bug bank's one-line
``noise_sigma`` 13. The model answers that are code start at 34 (ps3's
``noise_sigma``, two lines) and are mostly 46–200 (ps1's three-statement
``gradient_saliency`` 60); 25 sits between, with room for a terse honest
answer. **Threshold** `THRESHOLD` = 0.9: verbatim, renamed and reordered
copies of the course's functions score 1.00; the model answers and the bug
bank's 31 answers score at most 0.74 against the course's modules and
notebooks (0 of 43 reported). The numbers are printed by
``tests/test_grading_similarity.py``.

Untrusted input is bounded: an answer over `MAX_CHARS` characters or
`MAX_NODES` syntax nodes, or one Python cannot parse (a syntax error, nesting
too deep — `RecursionError` and `MemoryError` are caught), is not compared
and says why; the tree is walked without recursion.

Departure from copydetect / pycode-similar (both on PyPI): copydetect
tokenises with Pygments and turns every name, attribute names too, into one
placeholder, which makes honest torch answers alike; pycode-similar diffs
`ast.dump` of whole functions, so reordered statements lower its score, and
it recurses on the student's tree. Neither drops a stub. This is ~200 lines.
"""

from __future__ import annotations

import ast
import hashlib
from collections import Counter
from dataclasses import dataclass, field

K = 5  # tokens per gram
MIN_GRAMS = 25  # answers with fewer grams (after the stub's) are not compared
THRESHOLD = 0.9  # a pair at or above this share is listed
MAX_CHARS = 50_000  # characters of one answer we read
MAX_NODES = 20_000  # syntax nodes of one answer we walk

_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")
_SKIP = (ast.expr_context,)  # Load/Store/Del: the same in a copy and its rename


@dataclass
class Fingerprint:
    """An answer's grams (hash → count) and, per line, the grams it holds.

    `skipped` says why the answer is not compared ("" when it is).
    """

    grams: Counter = field(default_factory=Counter)
    lines: dict[tuple[int, int], set[int]] = field(default_factory=dict)
    skipped: str = ""

    @property
    def size(self) -> int:
        return sum(self.grams.values())


def _hash(gram: tuple[str, ...]) -> int:
    data = "\x1f".join(gram).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _leaf(node: ast.AST) -> list[str]:
    """What a node adds besides its kind: the API names, never the student's."""
    if isinstance(node, ast.Attribute):
        return [f".{node.attr}"]
    if isinstance(node, ast.keyword):
        return [f"{node.arg}="]
    if isinstance(node, (ast.Name, ast.arg)):
        return ["V"]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return ["V"]
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, (str, bytes)):
            return ["S"]
        return [repr(value)[:20]]
    if isinstance(node, ast.alias):
        return [node.name]
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return ["V"] * len(node.names)
    return []


def _statement_tokens(stmt: ast.stmt) -> list[str]:
    """Pre-order tokens of one statement, its nested statement blocks left out
    (they are statements of their own). Iterative: no recursion on the tree."""
    tokens: list[str] = []
    stack: list[ast.AST] = [stmt]
    while stack:
        node = stack.pop()
        if isinstance(node, _SKIP):
            continue
        tokens.append(type(node).__name__)
        tokens.extend(_leaf(node))
        children = []
        for name, value in ast.iter_fields(node):
            if node is stmt and name in _BLOCKS:
                continue
            items = value if isinstance(value, list) else [value]
            children.extend(v for v in items if isinstance(v, ast.AST))
        stack.extend(reversed(children))
    return tokens


def _statements(tree: ast.Module):
    """Every statement, nested ones too, docstrings left out (iterative)."""
    todo: list[ast.stmt] = list(reversed(tree.body))
    while todo:
        stmt = todo.pop()
        is_doc = (
            isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str)
        )
        if not is_doc:
            yield stmt
        for name in _BLOCKS:
            for child in reversed(getattr(stmt, name, None) or []):
                if isinstance(child, ast.stmt):
                    todo.append(child)
                elif hasattr(child, "body"):  # except handlers, match cases
                    todo.extend(reversed(child.body))


def parse_bounded(source: str) -> tuple[ast.Module | None, str]:
    """(tree, "") or (None, why) for an untrusted source, within the bounds."""
    from .static import python_source

    if not isinstance(source, str):
        return None, f"not text ({type(source).__name__})"
    if len(source) > MAX_CHARS:
        return None, f"{len(source):,} characters, over the {MAX_CHARS:,} compared"
    try:
        tree = ast.parse(python_source(source))
    except (SyntaxError, ValueError) as exc:
        return None, f"does not parse ({type(exc).__name__})"
    except (RecursionError, MemoryError) as exc:
        return None, f"nested too deeply to compare ({type(exc).__name__})"
    for count, _ in enumerate(ast.walk(tree), start=1):  # a queue: no recursion
        if count > MAX_NODES:
            return None, f"over the {MAX_NODES:,} syntax nodes compared"
    return tree, ""


def _span(stmt: ast.stmt) -> tuple[int, int]:
    """First and last line of a statement; of a compound one, its header only."""
    first = getattr(stmt, "lineno", 0)
    last = getattr(stmt, "end_lineno", None) or first
    body = getattr(stmt, "body", None)
    if isinstance(body, list) and body and hasattr(body[0], "lineno"):
        last = max(first, body[0].lineno - 1)
    return first, last


def fingerprint(source: str, stub: Fingerprint | None = None) -> Fingerprint:
    """The answer's fingerprint, less the stub's grams (see the module docstring)."""
    tree, why = parse_bounded(source)
    if tree is None:
        return Fingerprint(skipped=why)
    out = Fingerprint()
    for stmt in _statements(tree):
        tokens = _statement_tokens(stmt)
        grams = [tuple(tokens[i : i + K]) for i in range(max(1, len(tokens) - K + 1))]
        hashes = [_hash(g) for g in grams]
        out.grams.update(hashes)
        out.lines.setdefault(_span(stmt), set()).update(hashes)
    if stub is not None:
        out.grams -= stub.grams
    if out.size < MIN_GRAMS:
        out.skipped = f"too short to tell apart ({out.size} of {MIN_GRAMS} grams)"
    return out


def score(a: Fingerprint, b: Fingerprint) -> float:
    """|A ∩ B| / min(|A|, |B|) over the gram multisets; 0.0 when either is skipped."""
    if a.skipped or b.skipped:
        return 0.0
    shared = sum((a.grams & b.grams).values())
    return shared / min(a.size, b.size)


def matched_lines(a: Fingerprint, b: Fingerprint) -> set[int]:
    """Lines of A whose statement has most of its grams in B (for the side-by-side)."""
    out: set[int] = set()
    for (first, last), hashes in a.lines.items():
        if hashes and 2 * sum(h in b.grams for h in hashes) >= len(hashes):
            out.update(range(first, last + 1))
    return out


@dataclass(frozen=True)
class Unit:
    """One side of a comparison: a student's answer or a piece of the course.

    who: the student id (as `sanitize.student_id` shows it), or "course";
    where: the question's grade id for a student, the file and function for
    the course (``course_utils/saliency/gradient.py: gradient_saliency``).
    """

    who: str
    where: str
    source: str


@dataclass
class Pair:
    """Two answers to one question that look copied, for a person to judge."""

    question: str
    a: Unit
    b: Unit
    score: float
    kind: str  # "reference" (b is the course's) or "classmate"
    a_lines: set[int] = field(default_factory=set)
    b_lines: set[int] = field(default_factory=set)


@dataclass
class Comparison:
    """What `compare_answers` found: the pairs, and the answers it left out."""

    pairs: list[Pair] = field(default_factory=list)
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)  # (who, q) → why
    compared: int = 0  # answers long enough to compare
    threshold: float = THRESHOLD


def _pair(question, a, fa, b, fb, value, kind) -> Pair:
    return Pair(
        question, a, b, round(value, 3), kind, matched_lines(fa, fb), matched_lines(fb, fa)
    )


def compare_answers(
    answers: dict[str, dict[str, str]],
    references: dict[str, list[Unit]],
    stubs: dict[str, str] | None = None,
    threshold: float = THRESHOLD,
) -> Comparison:
    """Suspicious pairs among a class's answers and the course's references.

    Pure: no file is read, no score touched.

    Args:
        answers: student → question (grade id) → the answer cell's source.
        references: question → the course's units for it (reference functions,
            the model answer); each answer is paired with its best-scoring one.
        stubs: question → the released stub, whose grams no answer is credited
            with (default: none).
        threshold: the score (0–1] at which a pair is listed.

    Returns:
        A `Comparison`: pairs sorted by question, then score (highest first).

    Raises:
        ValueError: threshold outside (0, 1].
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    stubs = stubs or {}
    out = Comparison(threshold=threshold)
    questions = sorted({q for per in answers.values() for q in per} | set(references))
    for q in questions:
        stub = fingerprint(stubs[q]) if q in stubs else None
        refs = [(u, fingerprint(u.source, stub)) for u in references.get(q, [])]
        refs = [(u, f) for u, f in refs if not f.skipped]
        mine = []
        for student in sorted(answers):
            if q not in answers[student]:
                continue
            unit = Unit(student, q, answers[student][q])
            fp = fingerprint(unit.source, stub)
            if fp.skipped:
                out.skipped[(student, q)] = fp.skipped
                continue
            mine.append((unit, fp))
            best = max(refs, key=lambda r, fp=fp: score(fp, r[1]), default=None)
            if best is not None and (value := score(fp, best[1])) >= threshold:
                out.pairs.append(_pair(q, unit, fp, *best, value, "reference"))
        out.compared += len(mine)
        for i, (ua, fa) in enumerate(mine):
            for ub, fb in mine[i + 1 :]:
                if (value := score(fa, fb)) >= threshold:
                    out.pairs.append(_pair(q, ua, fa, ub, fb, value, "classmate"))
    out.pairs.sort(key=lambda p: (p.question, -p.score, p.a.who, p.b.who))
    return out
