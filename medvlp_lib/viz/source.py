"""Show the library's own code and docstrings in a chapter: the source of a loss next to its equation.

Two helpers, used by every method chapter so that what the reader sees *is* the code that ran:

* :func:`show_source` returns the source of a function, method or class as a Markdown code block (with
  its qualified name, file and line numbers), optionally with the docstring shortened to its first line,
  so the code sits next to the equation it implements;
* :func:`doc_section` returns one named section of a docstring, and raises an error that names the
  object, the heading and the headings that do exist when the section is missing (a renamed heading
  must fail the build, not silently show the wrong text). :func:`doc_markdown` renders such a section
  (reStructuredText math and literals) as Markdown.

Both accept a module, a class, a function or a method. A *section* of a docstring is one of

1. an underlined heading (numpy / reStructuredText style): a line followed by a line of ``-``, ``=`` or
   ``~`` at least as long; the section is everything up to the next underlined heading;
2. a run-in heading: a paragraph whose first line starts with the heading text (e.g. ``Why alpha = 1,
   beta = 0 gives no learning signal: ...``); the section is that paragraph (heading included) and, when
   the paragraph ends with a colon, the list or indented block that follows it.

The heading matches the start of the heading line (case-sensitive), so ``"What the renderer cannot
model"`` finds ``What the renderer cannot model (limitations)``; it must match exactly one section.
"""
from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path

__all__ = ["show_source", "source_text", "doc_section", "doc_headings", "doc_markdown", "resolve"]

_UNDERLINE = re.compile(r"^\s*([-=~^])\1{2,}\s*$")


def _name(obj) -> str:
    mod = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    if inspect.ismodule(obj):
        return obj.__name__
    return f"{mod}.{qual}" if mod else qual


def resolve(name: str):
    """The object a dotted name points to: the longest importable module prefix, then attributes.

    ``"medvlp_lib.data.render"`` is the *module* even where the package also exports a function of that name."""
    import importlib
    if not isinstance(name, str) or not name:
        raise TypeError(f"expected a dotted name like 'medvlp_lib.methods.msd', got {name!r}")
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for j, attr in enumerate(parts[i:]):
            if not hasattr(obj, attr):
                raise AttributeError(f"{'.'.join(parts[:i + j])} has no attribute {attr!r} (resolving {name!r})")
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no importable module in {name!r}")


def _docstring(obj) -> str:
    doc = inspect.getdoc(obj)
    if not doc:
        raise ValueError(f"{_name(obj)} has no docstring")
    return doc


def _underlined(lines: list[str]) -> list[int]:
    """Indices of heading lines that are followed by an underline at least as long as the heading."""
    out = []
    for i in range(len(lines) - 1):
        head, under = lines[i].strip(), lines[i + 1]
        if head and not _UNDERLINE.match(lines[i]) and _UNDERLINE.match(under) and len(under.strip()) >= len(head):
            out.append(i)
    return out


def doc_headings(obj) -> list[str]:
    """The underlined headings of ``obj``'s docstring (run-in headings are not listed: any paragraph may be one)."""
    lines = _docstring(obj).splitlines()
    return [lines[i].strip() for i in _underlined(lines)]


def _paragraphs(lines: list[str]) -> list[tuple[int, int]]:
    """(start, end) line ranges of the blank-line separated blocks."""
    blocks, start = [], None
    for i, line in enumerate(lines + [""]):
        if line.strip() and start is None:
            start = i
        elif not line.strip() and start is not None:
            blocks.append((start, i))
            start = None
    return blocks


def _is_continuation(line: str) -> bool:
    """A block that belongs to a preceding 'heading:' paragraph: a list item or an indented block."""
    s = line.lstrip()
    return line[:1].isspace() or s[:2] in ("* ", "- ", "+ ") or bool(re.match(r"\d+[.)] ", s))


def doc_section(obj, heading: str) -> str:
    """The text of the docstring section of ``obj`` whose heading starts with ``heading`` (see module docstring).

    ``obj`` is the object or its dotted name (``"medvlp_lib.methods.msd"``, see :func:`resolve`); chapters pass
    the name, so a test can check every section they ask for without running them. Underlined sections are returned without their heading; a run-in section is returned whole, heading
    included (it is the paragraph's first words). Raises ``LookupError`` naming the object, the heading
    asked for and the headings that exist when no section or more than one section matches.
    """
    if not isinstance(heading, str) or not heading.strip():
        raise ValueError(f"heading must be a non-empty string, got {heading!r}")
    heading = heading.strip()
    if isinstance(obj, str):
        obj = resolve(obj)
    lines = _docstring(obj).splitlines()
    heads = _underlined(lines)
    found = []
    for n, i in enumerate(heads):
        if lines[i].strip().startswith(heading):
            end = heads[n + 1] if n + 1 < len(heads) else len(lines)
            found.append("\n".join(lines[i + 2:end]).strip())
    under_lines = {i for h in heads for i in (h, h + 1)}
    blocks = _paragraphs(lines)
    for b, (start, end) in enumerate(blocks):
        if start in under_lines or not lines[start].lstrip().startswith(heading):
            continue
        stop = end
        if lines[end - 1].rstrip().endswith(":"):
            for nxt_start, nxt_end in blocks[b + 1:]:
                if nxt_start in under_lines or not _is_continuation(lines[nxt_start]):
                    break
                stop = nxt_end
        found.append(textwrap.dedent("\n".join(lines[start:stop])).strip())
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise LookupError(f"{_name(obj)}: {what} docstring section matches the heading {heading!r}; its underlined "
                          f"headings are {doc_headings(obj)} (a run-in heading must start a paragraph)")
    if not found[0]:
        raise LookupError(f"{_name(obj)}: the docstring section {heading!r} is empty")
    return found[0]


def doc_markdown(text: str) -> str:
    """Render docstring text (reStructuredText-ish) as Markdown: ``.. math::`` blocks become ``$$`` display math,
    double-backtick literals single-backtick code, ``:func:`x``` (and other roles) plain code ``x``."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)\.\. math::\s*(.*)$", lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, body = len(m.group(1)), [m.group(2).strip()] if m.group(2).strip() else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            if lines[i].strip():
                body.append(lines[i].strip())
            elif body and i + 1 < len(lines) and len(lines[i + 1]) - len(lines[i + 1].lstrip()) <= indent:
                break
            i += 1
        out += ["", "$$", " ".join(body), "$$", ""]
    md = "\n".join(out)
    md = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", md)
    md = re.sub(r"``([^`]+)``", r"`\1`", md)
    return re.sub(r"\n{3,}", "\n\n", md).strip()


def _docstring_node(node):
    first = node.body[0] if getattr(node, "body", None) else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first
    return None


def _only_raises(stmts) -> bool:
    """True for a block that only validates: every path ends in ``raise`` (ifs and loops around raises)."""
    for st in stmts:
        if isinstance(st, ast.Raise):
            continue
        if isinstance(st, ast.If) and _only_raises(st.body) and _only_raises(st.orelse):
            continue
        if isinstance(st, (ast.For, ast.While)) and _only_raises(st.body) and not st.orelse:
            continue
        return False
    return True


def _edit(src: str, docstring: str, checks: bool) -> str:
    """``src`` (one top-level def/class) with its docstring cut (``"short"``: first line, ``"none"``) and, when
    ``checks`` is False, the leading input-validation statements (ifs that only raise) replaced by one comment."""
    tree = ast.parse(src)
    node = tree.body[0] if tree.body else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or not node.body:
        return src
    lines = src.splitlines()
    edits = []  # (first line, last line, replacement lines), 1-based inclusive
    doc = _docstring_node(node)
    body = node.body[1:] if doc is not None else node.body
    if doc is not None and docstring != "full":
        indent = re.match(r"\s*", lines[doc.lineno - 1]).group(0)
        text = doc.value.value.strip().splitlines()
        summary = text[0].strip().replace('"""', "'''")
        repl = [] if docstring == "none" else [f'{indent}"""{summary}{" ..." if len(text) > 1 else ""}"""']
        edits.append((doc.lineno, doc.end_lineno, repl))
    if not checks and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        guard = []
        for st in body:
            if isinstance(st, (ast.If, ast.For)) and _only_raises([st]):
                guard.append(st)
            else:
                break
        if guard and len(guard) < len(body):
            indent = re.match(r"\s*", lines[guard[0].lineno - 1]).group(0)
            n = guard[-1].end_lineno - guard[0].lineno + 1
            edits.append((guard[0].lineno, guard[-1].end_lineno,
                          [f"{indent}# ... {n} lines of input checks (they raise errors that name the argument)"]))
    for first, last, repl in sorted(edits, reverse=True):
        lines[first - 1:last] = repl
    return "\n".join(lines)


def source_text(obj, docstring: str = "short", checks: bool = True) -> str:
    """The source code of ``obj`` (dedented). ``docstring``: ``"full"``, ``"short"`` (first line only) or
    ``"none"``; ``checks=False`` folds the leading input checks of a function into one comment line."""
    if docstring not in ("full", "short", "none"):
        raise ValueError(f"docstring must be 'full', 'short' or 'none', got {docstring!r}")
    target = inspect.unwrap(obj)
    if isinstance(target, property):
        target = target.fget
    try:
        src = textwrap.dedent(inspect.getsource(target))
    except (TypeError, OSError) as err:
        raise TypeError(f"no Python source for {_name(obj)}: {err}") from None
    return _edit(src, docstring, checks).rstrip()


class SourceBlock:
    """What :func:`show_source` returns: renders as a Markdown code block in Jupyter and in the book."""

    def __init__(self, name: str, location: str, code: str):
        self.name, self.location, self.code = name, location, code

    def _repr_markdown_(self) -> str:
        return f"**Source of `{self.name}`** ({self.location}):\n\n```python\n{self.code}\n```\n"

    def __repr__(self) -> str:
        return f"# {self.name} ({self.location})\n{self.code}"


def show_source(obj, docstring: str = "short", checks: bool = False) -> SourceBlock:
    """The source of a library function, method or class, for display next to the equation it implements.

    Returns an object that Jupyter and the book render as a highlighted Python block headed by the object's
    qualified name, its file (relative to the package) and line range. ``docstring="short"`` (default) keeps
    the docstring's first line only (the chapter shows the equation; ``help(obj)`` shows the rest);
    ``checks=False`` (default) folds the function's leading input checks into one comment line, so what is
    shown is the computation. The line range always refers to the full definition in the file.
    """
    target = inspect.unwrap(obj)
    if isinstance(target, property):
        target = target.fget
    code = source_text(target, docstring, checks)
    try:
        path = Path(inspect.getsourcefile(target))
        lines, start = inspect.getsourcelines(target)
        parts = path.parts
        rel = "/".join(parts[len(parts) - 1 - parts[::-1].index("medvlp_lib"):]) if "medvlp_lib" in parts \
            else path.name
        location = f"`{rel}`, lines {start}–{start + len(lines) - 1}"
    except (TypeError, OSError):
        location = "source file unknown"
    return SourceBlock(_name(target), location, code)
