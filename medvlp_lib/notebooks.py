"""Execute the book's notebooks and build the HTML book: the one runner behind `make book` and the tests.

Source of truth for every chapter is its jupytext MyST-markdown file ``notebooks/NN_name.md`` (no
outputs). ``execute`` runs each source with papermill, injecting ``PROFILE`` (and any extra parameters)
into its ``parameters`` cell, and writes the executed copy to ``_build/executed/notebooks/`` after
``clean_outputs`` has made it fit for a page: each progress bar kept as its final line only (a stored
notebook keeps every redraw of a bar as text), papermill's injected-parameters cell tagged
``remove-cell``, and this machine's paths shortened. ``build-html`` stages the prose pages, the
configuration and the executed notebooks in ``_build/stage`` and runs Jupyter Book 1.x on them with
execution switched off, so every notebook is executed exactly once per build.

**The Colab copies.** The paired ``notebooks/NN_name.ipynb`` is what a reader opens in Colab or plain
Jupyter, where MyST roles and directives would show as raw text. ``sync`` writes it from the source:

* code cells unchanged; the first code cell of every source is the setup cell ``SETUP_CELL`` (``sync``
  writes it into the ``.md`` sources too): it does nothing where ``medvlp_lib`` imports, and otherwise
  clones the repository named in ``_config.yml`` (``repository.url``; or uses ``MEDVLP_INSTALL``, a local
  checkout or a git URL) and runs ``pip install -e <checkout>[book]``; the book removes it (``remove-cell``);
* markdown cells rendered by ``render_markdown``: ``{glue:text}`name``` becomes the value that name
  had in the last executed copy ``_build/executed/notebooks/NN_name.ipynb`` (run ``make execute`` before
  ``make sync``; a name missing there becomes the phrase ``FALLBACK`` shows, and a test fails on it),
  ``{cite}`` becomes author-year text from ``book/references.bib``, ``{doc}``/``{ref}``/``{numref}``/``{term}``
  their titles (a chapter as a Colab link), admonitions blockquotes, dropdowns ``<details>`` blocks and
  ``{math}``/``{eq}`` plain MathJax. Each rendered cell keeps the SHA-1 of its MyST source in
  ``metadata.medvlp.myst_sha1``: ``check-sync`` compares those, so numbers may change without the pair
  going out of sync, and ``sync`` without executed copies keeps the numbers already in the ``.ipynb``.

Command line::

    python -m medvlp_lib.notebooks execute --profile fast [--notebooks 01_data_and_clip_baseline ...]
    python -m medvlp_lib.notebooks build-html
    python -m medvlp_lib.notebooks sync | check-sync
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .utils import environ, project_root

__all__ = ["notebook_sources", "sync", "check_sync", "execute_notebook", "execute_all", "build_html", "clean_outputs",
           "render_markdown", "RenderContext", "colab_notebook", "setup_cell_source", "write_setup_cells",
           "glued_values", "colab_fallbacks", "repository", "SETUP_CELL", "FALLBACK"]

BUILD = "_build"
EXECUTED = Path(BUILD) / "executed" / "notebooks"
STAGE = Path(BUILD) / "stage"
PROFILES = ("fast", "cpu", "gpu")


def _root(root: str | Path | None) -> Path:
    return Path(root) if root is not None else project_root()


def notebook_sources(root: str | Path | None = None, names=None) -> list[Path]:
    """The jupytext sources ``notebooks/*.md`` in chapter order, optionally filtered by stem."""
    nb_dir = _root(root) / "notebooks"
    if not nb_dir.is_dir():
        raise FileNotFoundError(f"notebook folder {nb_dir} does not exist (expected notebooks/NN_name.md files)")
    found = sorted(p for p in nb_dir.glob("[0-9][0-9]_*.md"))
    if names and names != ["all"]:
        by_stem = {p.stem: p for p in found}
        missing = [n for n in names if n not in by_stem]
        if missing:
            raise ValueError(f"unknown notebook(s) {missing}; available: {sorted(by_stem)}")
        found = [by_stem[n] for n in names]
    return found


def _read(path: Path):
    import jupytext
    return jupytext.read(path)


def _sha1(text: str) -> str:
    import hashlib
    return hashlib.sha1(text.encode()).hexdigest()


def _tags(cell) -> tuple:
    return tuple(cell.get("metadata", {}).get("tags", []))


# ---------------------------------------------------------------------------------------------------------
# the setup cell
SETUP_TAGS = ["remove-cell"]
SETUP_FIRST_LINE = "# Setup for Colab and fresh environments"
SETUP_CELL = '''\
# Setup for Colab and fresh environments: installs the book's library where it is missing, else does nothing.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("medvlp_lib") is None:
    _repo, _branch = "{url}", "{branch}"  # _config.yml: repository
    _src = os.environ.get("MEDVLP_INSTALL") or _repo  # a local checkout, or a repository to clone
    if not os.path.isfile(os.path.join(_src, "pyproject.toml")):
        _dst = os.path.abspath("medvlp")
        if not os.path.isdir(_dst):
            _shallow = ["--depth", "1", "--branch", _branch] if _src == _repo else []
            subprocess.run(["git", "clone", "--quiet", *_shallow, _src, _dst], check=True)
        _src = _dst
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", _src + "[book]"], check=True)
    sys.path.insert(0, os.path.abspath(_src))
    importlib.invalidate_caches()
from medvlp_lib.book import setup_notebook
setup_notebook()'''


def repository(root: str | Path | None = None) -> dict:
    """``repository`` of ``_config.yml`` (``url``, ``branch``, ``path_to_book``)."""
    import yaml
    config = yaml.safe_load((_root(root) / "_config.yml").read_text())
    repo = dict(config.get("repository") or {})
    if not repo.get("url"):
        raise ValueError("_config.yml: repository.url is missing (the setup cell clones it on Colab)")
    repo.setdefault("branch", "main")
    return repo


def setup_cell_source(root: str | Path | None = None) -> str:
    """The setup cell every chapter starts with, for the repository ``_config.yml`` names."""
    repo = repository(root)
    return SETUP_CELL.replace("{url}", repo["url"].rstrip("/")).replace("{branch}", repo["branch"])


def setup_cell_problems(nb, root: str | Path | None = None) -> list[str]:
    """Why ``nb``'s first code cell is not the current setup cell (empty if it is)."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or not code[0].source.startswith(SETUP_FIRST_LINE):
        return ["the first code cell is not the setup cell (run `make sync`)"]
    problems = []
    if code[0].source.strip() != setup_cell_source(root):
        problems.append("the setup cell differs from medvlp_lib.notebooks.SETUP_CELL (run `make sync`)")
    if list(_tags(code[0])) != SETUP_TAGS:
        problems.append(f"the setup cell must be tagged {SETUP_TAGS}")
    return problems


def write_setup_cells(root: str | Path | None = None) -> list[Path]:
    """Put the current setup cell first in every source ``notebooks/*.md``; returns the files changed.

    Edits the text (not a jupytext round trip), so nothing else in a source changes.
    """
    changed = []
    block = (f"```{{code-cell}} ipython3\n:tags: [{', '.join(SETUP_TAGS)}]\n\n"
             f"{setup_cell_source(root)}\n```\n")
    for src in notebook_sources(root):
        if not setup_cell_problems(_read(src), root):
            continue
        text = src.read_text()
        old = re.search(r"^```\{code-cell\}[^\n]*\n(?::[^\n]*\n)*\n?" + re.escape(SETUP_FIRST_LINE) + r".*?\n```\n",
                        text, re.S | re.M)
        if old:
            text = text[:old.start()] + block + text[old.end():]
        else:
            first = re.search(r"^```\{code-cell\}", text, re.M)
            at = first.start() if first else len(text)
            text = text[:at] + block + ("\n" if first else "") + text[at:]
        src.write_text(text)
        changed.append(src)
    return changed


# ---------------------------------------------------------------------------------------------------------
# MyST -> plain Jupyter markdown for the Colab copies
FALLBACK = "[{name}: run the notebook]"
#: roles and directives that must not survive in a Colab copy
UNRENDERED = re.compile(r"(?<!`)\{[a-z][\w.-]*(?::[\w.-]+)*\}`|^\s*(```+|:::+)\{[a-z][\w:.-]*\}", re.M)
_ROLE = re.compile(r"(?<!`)\{([a-z][\w.-]*(?::[\w.-]+)*)\}`([^`]+)`")
_FENCE = re.compile(r"^(\s*)(`{3,}|:{3,})\{([a-z][\w:.-]*)\}[ \t]*(.*)$")
_PLAIN_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_ADMONITIONS = {"note", "tip", "hint", "important", "warning", "caution", "attention", "danger", "error",
                "seealso", "admonition", "margin", "sidebar", "topic"}


def glued_values(executed: str | Path) -> dict[str, dict]:
    """``{name: mimebundle}`` of every ``glue`` in an executed notebook (MyST-NB's record format)."""
    import nbformat
    out = {}
    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            meta = o.get("metadata", {}).get("scrapbook")
            if meta:
                prefix = meta.get("mime_prefix", "")
                out[meta["name"]] = {k[len(prefix):]: v for k, v in o.get("data", {}).items()}
    return out


def format_plain(text: str, spec: str) -> str:
    """MyST-NB's ``{glue:text}`name:spec``` formatting of a value's ``text/plain`` form."""
    import ast
    try:
        value = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        value = text
    if not spec:
        return str(value)
    kind = spec[-1]
    if kind == "s":
        value = str(value)
    elif kind in "bcdoxX":
        value = int(value)
    elif kind in "eEfFgGn%":
        value = float(value)
    return format(value, spec)


class _Bib:
    """Author-year citations from ``book/references.bib`` (the style of the book's reference list)."""

    def __init__(self, path: Path):
        self.entries = {}
        if path.exists():
            from pybtex.database import parse_file
            for key, entry in parse_file(str(path)).entries.items():
                people = entry.persons.get("author") or entry.persons.get("editor") or []
                last = [" ".join(p.last_names).replace("{", "").replace("}", "") for p in people]
                names = (last[0] if len(last) == 1 else f"{last[0]} and {last[1]}" if len(last) == 2
                         else f"{last[0]} et al." if last else key)
                self.entries[key] = (names, entry.fields.get("year", "n.d."))

    def cite(self, keys: str, textual: bool) -> str:
        parts = []
        for key in (k.strip() for k in keys.split(",")):
            if key not in self.entries:
                raise KeyError(f"citation {key!r} is not in book/references.bib")
            names, year = self.entries[key]
            parts.append(f"{names} ({year})" if textual else f"{names}, {year}")
        return "; ".join(parts) if textual else "[" + "; ".join(parts) + "]"


class RenderContext:
    """What ``render_markdown`` needs to know about the book: glue values, references, links."""

    def __init__(self, root: str | Path | None = None, glue: dict | None = None, doc: str = "notebooks/x"):
        self.root = _root(root)
        self.glue = glue or {}
        self.doc = doc  # the page being rendered, e.g. "notebooks/01_data_and_clip_baseline"
        self.missing: list[str] = []
        self.attachments: dict = {}
        self.repo = repository(self.root)
        self.bib = _Bib(self.root / "book" / "references.bib")

    def _target(self, target: str) -> str:
        """A ``{doc}`` target as a path from the book root, without extension."""
        import posixpath
        target = target.split("#")[0]
        if target.startswith("/"):
            path = target.lstrip("/")
        else:
            path = posixpath.normpath(posixpath.join(posixpath.dirname(self.doc), target))
        return re.sub(r"\.(md|ipynb)$", "", path)

    def _github(self) -> str | None:
        m = re.match(r"https?://github\.com/([^/]+/[^/]+?)(\.git)?/?$", self.repo["url"])
        return m.group(1) if m else None

    def url(self, path: str, raw: bool = False) -> str:
        """Where a reader outside the book opens ``path`` (a chapter opens in Colab)."""
        base, branch = self.repo["url"].rstrip("/"), self.repo["branch"]
        gh = self._github()
        if path.startswith("notebooks/") and path.endswith(".ipynb") and gh:
            return f"https://colab.research.google.com/github/{gh}/blob/{branch}/{path}"
        return f"{base}/{'raw' if raw else 'blob'}/{branch}/{path}"

    def title(self, path: str) -> str:
        for ext in (".md", ".ipynb"):
            f = self.root / f"{path}{ext}"
            if f.exists():
                m = re.search(r"^# (.+)$", f.read_text(), re.M)
                if m:
                    return m.group(1).strip()
        return path.rsplit("/", 1)[-1]

    def doc_link(self, content: str) -> str:
        text, target = _split_title(content)
        path = self._target(target)
        ext = ".ipynb" if path.startswith("notebooks/") else ".md"
        return f"[{text or self.title(path)}]({self.url(path + ext)})"

    def glue_text(self, content: str, role: str) -> str:
        name, _, spec = content.partition(":") if role == "glue:text" else (content, "", "")
        bundle = self.glue.get(name.strip())
        if bundle is None or "text/plain" not in bundle:
            self.missing.append(name.strip())
            return FALLBACK.format(name=name.strip())
        if role == "glue:md" and "text/markdown" in bundle:
            return bundle["text/markdown"]
        return format_plain(bundle["text/plain"], spec)

    def glue_figure(self, name: str, caption: str) -> str:
        bundle = self.glue.get(name.strip())
        for mime, ext in (("image/png", "png"), ("image/jpeg", "jpg"), ("image/svg+xml", "svg")):
            if bundle and mime in bundle:
                fname = f"{name.strip()}.{ext}"
                self.attachments[fname] = {mime: bundle[mime]}
                return f"![{caption or name}](attachment:{fname})" + (f"\n\n*{caption}*" if caption else "")
        self.missing.append(name.strip())
        return FALLBACK.format(name=name.strip())


def _split_title(content: str) -> tuple[str, str]:
    m = re.match(r"^(.*?)\s*<([^<>]+)>\s*$", content, re.S)
    return (m.group(1).strip(), m.group(2).strip()) if m else ("", content.strip())


def _render_role(m: re.Match, ctx: RenderContext) -> str:
    role, content = m.group(1), m.group(2)
    if role in ("glue", "glue:", "glue:any", "glue:text", "glue:md"):
        return ctx.glue_text(content, role)
    if role in ("cite", "cite:p", "cite:ps", "cite:t", "cite:ts", "cite:alp", "cite:cts"):
        return ctx.bib.cite(content, textual=role.startswith("cite:t") or role == "cite:cts")
    if role == "doc":
        return ctx.doc_link(content)
    if role == "download":
        text, target = _split_title(content)
        import posixpath
        path = posixpath.normpath(posixpath.join(posixpath.dirname(ctx.doc), target))
        return f"[{text or target}]({ctx.url(path)})"
    if role in ("math", "m"):
        return f"${content}$"
    if role == "eq":
        return f"({content})"
    text, target = _split_title(content)
    return text or target  # ref, numref, term, abbr, sub, kbd, ... : their visible text


def _render_roles(text: str, ctx: RenderContext) -> str:
    out, fence = [], None
    for line in text.split("\n"):
        plain = _PLAIN_FENCE.match(line)
        if fence is None and plain:
            fence = plain.group(1)
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip(fence[0]).strip():
            fence = None
            out.append(line)
            continue
        out.append(line if fence is not None else _ROLE.sub(lambda m: _render_role(m, ctx), line))
    return "\n".join(out)


def _directive(name: str, arg: str, body: list[str], ctx: RenderContext) -> str:
    options = {}
    while body and re.match(r"^\s*:[\w-]+:", body[0]):
        key, _, value = body.pop(0).strip()[1:].partition(":")
        options[key] = value.strip()
    while body and not body[0].strip():
        body.pop(0)
    inner = render_markdown("\n".join(body), ctx, roles=False)
    if name in ("dropdown",) or "dropdown" in options.get("class", ""):
        title = arg or ("Show" if name == "dropdown" else name.capitalize())
        return f"<details>\n<summary>{title}</summary>\n\n{inner}\n\n</details>"
    if name in _ADMONITIONS:
        title = arg if name in ("admonition", "sidebar", "topic") else name.capitalize() + (f": {arg}" if arg else "")
        lines = [f"**{title}**" if title else ""] + ([""] if title else []) + inner.split("\n")
        return "\n".join("> " + ln if ln else ">" for ln in lines)
    if name in ("math", "eq"):
        return f"$$\n{inner}\n$$"
    if name in ("figure", "image"):
        import posixpath
        rel = posixpath.normpath(posixpath.join(posixpath.dirname(ctx.doc), arg))
        path = arg if "://" in arg else ctx.url(rel, raw=True)
        alt = options.get("alt", inner.split("\n")[0] if inner else "")
        return f"![{alt}]({path})" + (f"\n\n*{inner}*" if inner and name == "figure" else "")
    if name == "glue:figure":
        return ctx.glue_figure(arg, inner)
    if name in ("glue", "glue:", "glue:any", "glue:md", "glue:math"):
        value = ctx.glue_text(arg, "glue:md" if name == "glue:md" else "glue")
        return f"$$\n{value}\n$$" if name == "glue:math" else value
    if name in ("code", "code-block", "sourcecode", "code-cell"):
        return f"```{arg}\n{chr(10).join(body)}\n```"
    if name in ("bibliography", "tableofcontents", "toctree", "raw"):
        return ""
    return (f"**{arg}**\n\n" if arg else "") + inner


def render_markdown(text: str, ctx: RenderContext, roles: bool = True) -> str:
    """One MyST markdown cell as plain Jupyter markdown (see the module docstring for what becomes what)."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        m = _FENCE.match(line)
        if re.match(r"^\s*\([\w:.-]+\)=\s*$", line) or re.match(r"^\s*%", line):
            i += 1  # MyST targets and comments
            continue
        if not m:
            plain = _PLAIN_FENCE.match(line)
            if plain:  # an ordinary code block: copied verbatim
                fence, j = plain.group(1), i + 1
                while j < len(lines) and not (lines[j].strip().startswith(fence)
                                              and not lines[j].strip().strip(fence[0])):
                    j += 1
                out.extend(lines[i:j + 1])
                i = j + 1
                continue
            out.append(line)
            i += 1
            continue
        indent, fence, name, arg = m.groups()
        j, depth = i + 1, 0
        while j < len(lines):  # the closing fence at this depth (nested fences of the same kind count)
            s = lines[j].strip()
            if re.match(rf"^{re.escape(fence)}\{{", s):
                depth += 1
            elif s == fence:
                if depth == 0:
                    break
                depth -= 1
            j += 1
        body = [ln[len(indent):] if ln.startswith(indent) else ln for ln in lines[i + 1:j]]
        out.append(indent + _directive(name, arg.strip(), body, ctx).replace("\n", "\n" + indent))
        i = j + 1
    result = "\n".join(out)
    return _render_roles(result, ctx) if roles else result


def colab_notebook(src: Path, root: str | Path | None = None, glue: dict | None = None, previous=None):
    """The Colab copy of one source: code cells as they are, markdown rendered (``render_markdown``).

    ``glue`` defaults to the values of the last executed copy; where there is none, markdown cells whose
    MyST source is unchanged are taken from ``previous`` (the ``.ipynb`` there now) so that their numbers stay.
    Returns ``(notebook, names of glued values that were missing)``.
    """
    root = _root(root)
    nb = _read(src)
    executed = root / EXECUTED / f"{src.stem}.ipynb"
    if glue is None and executed.exists():
        glue = glued_values(executed)
    kept = {}
    if glue is None and previous is not None:
        kept = {c.get("metadata", {}).get("medvlp", {}).get("myst_sha1"): c for c in previous.cells
                if c.cell_type == "markdown"}
    missing = []
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    nb.metadata.pop("jupytext", None)
    for i, cell in enumerate(nb.cells):
        cell["id"] = _sha1(f"{i}:{cell.cell_type}:{cell.source}")[:8]  # stable: re-syncing does not churn
        if cell.cell_type == "code" and "hide-input" in _tags(cell):  # collapsed in Jupyter and Colab too
            cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
        if cell.cell_type != "markdown":
            continue
        sha = _sha1(cell.source)
        if sha in kept:
            cell.source = kept[sha].source
            if kept[sha].get("attachments"):
                cell["attachments"] = kept[sha]["attachments"]
        else:
            ctx = RenderContext(root, glue or {}, doc=f"notebooks/{src.stem}")
            cell.source = render_markdown(cell.source, ctx)
            missing += ctx.missing
            if ctx.attachments:
                cell["attachments"] = ctx.attachments
        cell.metadata.setdefault("medvlp", {})["myst_sha1"] = sha
    return nb, missing


def sync(root: str | Path | None = None) -> list[Path]:
    """Write the setup cells into the sources, the claims tables of the paper pages (:func:`paper_pages`) and the
    results columns of the course page's time table (:func:`course_page_text`), then every
    Colab copy ``.ipynb`` that changed; returns the files written."""
    import nbformat
    root = _root(root)
    write_setup_cells(root)
    written = []
    generated = dict(paper_pages(root))
    if (root / "book" / "course.md").is_file():
        generated[root / "book" / "course.md"] = course_page_text(root)
    for page, text in generated.items():
        if page.read_text() != text:
            page.write_text(text)
            written.append(page)
    for src in notebook_sources(root):
        dst = src.with_suffix(".ipynb")
        previous = nbformat.read(dst, as_version=4) if dst.exists() else None
        nb, missing = colab_notebook(src, root, previous=previous)
        if missing:
            print(f"[sync] {dst.name}: no executed value for {sorted(set(missing))} (run `make execute` first)")
        if previous is not None and _comparable(previous) == _comparable(nb):
            continue  # unchanged: leave the file (and its cell ids) untouched
        nbformat.write(nb, dst)
        written.append(dst)
    return written


PAPER_PAGES = {"MSD+RFBE": "msd_rfbe", "MoMKD": "momkd", "VLCD": "vlcd", "Adaptor": "adaptor"}
"""The ledger's paper name -> its page ``book/papers/<page>.md``."""
CLAIMS_BEGIN = "<!-- claims table: written by `make sync` from the claims the experiments declare; do not edit -->"
CLAIMS_END = "<!-- end of claims table -->"


def paper_claims_table(paper: str, root: str | Path | None = None) -> str:
    """The markdown table of ``paper``'s claims as the experiment modules declare them (claim, the paper's number,
    chapter, results file): one source for the paper page and the ledger."""
    from .ledger import declared_claims
    stems = {p.stem[:2]: p.stem for p in notebook_sources(root)}
    rows = [c for c in declared_claims() if c.paper == paper]
    if not rows:
        raise KeyError(f"no claims declared for paper {paper!r}; papers: {sorted(PAPER_PAGES)}")

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| claim | the paper's number | chapter | results |", "| --- | --- | --- | --- |"]
    for c in rows:
        chapter = f"{{doc}}`{c.chapter} </notebooks/{stems[c.chapter]}>`" if c.chapter in stems else c.chapter
        lines.append(f"| {cell(c.claim)} | {cell(c.paper_value)} | {chapter} | `{c.result}` |")
    return "\n".join(lines)


def _generated_block(path: Path, begin: str, end: str) -> tuple[str, str, str]:
    """``(head, block, tail)`` of ``path``'s text around its ``begin`` ... ``end`` markers (a generated block)."""
    text = path.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{path} has no generated-block markers ({begin!r} ... {end!r})")
    head, rest = text.split(begin, 1)
    block, tail = rest.split(end, 1)
    return head, block, tail


def paper_page_text(path: Path, paper: str, root: str | Path | None = None) -> str:
    """``path``'s text with the block between :data:`CLAIMS_BEGIN` and :data:`CLAIMS_END` replaced by
    :func:`paper_claims_table`."""
    head, _, tail = _generated_block(path, CLAIMS_BEGIN, CLAIMS_END)
    return f"{head}{CLAIMS_BEGIN}\n{paper_claims_table(paper, root)}\n{CLAIMS_END}{tail}"


def paper_pages(root: str | Path | None = None) -> dict[Path, str]:
    """``{book/papers/<page>.md: its text with the current claims table}`` for every paper page that exists."""
    base = _root(root) / "book" / "papers"
    return {base / f"{page}.md": paper_page_text(base / f"{page}.md", paper, root) for paper, page in
            PAPER_PAGES.items() if (base / f"{page}.md").is_file()}


COURSE_BEGIN = ("<!-- time table: the results columns are written by `make sync` from results/*.json; "
                "do not edit them -->")
COURSE_END = "<!-- end of time table -->"


def course_page_text(root: str | Path | None = None) -> str:
    """``book/course.md`` with the two results columns of its time table (the dates the chapter's results files were
    written, month-day, and the sum of their ``wall_time_s`` in minutes) recomputed from ``results/``; the other
    columns (chapter, book-build minutes, the results files) are kept as written. A chapter whose files are not all
    written yet says so instead of a sum."""
    root = _root(root)
    head, block, tail = _generated_block(root / "book" / "course.md", COURSE_BEGIN, COURSE_END)
    lines = []
    for line in block.strip("\n").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        files = re.findall(r"`(\w+)`", cells[4]) if len(cells) == 5 and cells[0].startswith("{doc}") else []
        if files:
            paths = [root / "results" / f"{f}.json" for f in files]
            recs = [json.loads(p.read_text()) for p in paths if p.is_file()]
            cells[2] = ", ".join(sorted({r["created"][5:10] for r in recs})) or "—"
            cells[3] = (f"{sum(r['wall_time_s'] for r in recs) / 60:.1f}" if len(recs) == len(files) else
                        f"not all run yet ({len(recs)} of {len(files)} files)")
            line = "| " + " | ".join(cells) + " |"
        lines.append(line)
    return f"{head}{COURSE_BEGIN}\n" + "\n".join(lines) + f"\n{COURSE_END}{tail}"


def _comparable(nb) -> list:
    return [(c.cell_type, c.source.strip(), _tags(c), json.dumps(c.get("attachments", {}), sort_keys=True),
             json.dumps(c.get("metadata", {}), sort_keys=True)) for c in nb.cells]


def _pair_problems(src: Path, dst: Path, root: str | Path | None = None) -> list[str]:
    import nbformat
    source, paired = _read(src), nbformat.read(dst, as_version=4)
    problems = [f"{src.name}: {p}" for p in setup_cell_problems(source, root)]
    want = [(c.cell_type, c.source.strip() if c.cell_type == "code" else _sha1(c.source), _tags(c))
            for c in source.cells]
    have = [(c.cell_type, c.source.strip() if c.cell_type == "code" else
             c.get("metadata", {}).get("medvlp", {}).get("myst_sha1"), _tags(c)) for c in paired.cells]
    if want != have:
        problems.append(f"{dst} differs from {src.name} (run `make sync`)")
    if any(c.get("outputs") for c in paired.cells if c.cell_type == "code"):
        problems.append(f"{dst} contains outputs; commit it without outputs (run `make sync`)")
    for c in paired.cells:
        if c.cell_type == "markdown" and UNRENDERED.search(c.source):
            problems.append(f"{dst}: a markdown cell still holds MyST markup: "
                            f"{UNRENDERED.search(c.source).group(0)!r} (run `make sync`)")
            break
    return problems


def check_sync(root: str | Path | None = None) -> list[str]:
    """Return a list of problems (missing or out-of-sync ``.ipynb`` pairs, a stale setup cell); empty means in sync."""
    problems = []
    for src in notebook_sources(root):
        dst = src.with_suffix(".ipynb")
        if not dst.exists():
            problems.append(f"{dst} is missing (run `make sync`)")
            continue
        problems.extend(_pair_problems(src, dst, root))
    return problems


def colab_fallbacks(root: str | Path | None = None) -> dict[str, list[str]]:
    """Glued names that a committed Colab copy shows as ``FALLBACK`` instead of a number, per notebook."""
    import nbformat
    pattern = re.compile(re.escape(FALLBACK).replace(r"\{name\}", r"([\w.-]+)"))
    out = {}
    for src in notebook_sources(root):
        dst = src.with_suffix(".ipynb")
        if dst.exists():
            names = [n for c in nbformat.read(dst, as_version=4).cells if c.cell_type == "markdown"
                     for n in pattern.findall(c.source)]
            if names:
                out[src.stem] = names
    return out


INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
#: environment of the kernels that execute the book (unless the variable is already set)
KERNEL_ENV = {"TQDM_MININTERVAL": "60", "PYTHONWARNINGS": "ignore:IProgress not found"}
#: set for the book's kernels whatever the environment says: ``medvlp_lib.book.glue`` records for the pages
BOOK_KERNEL_ENV = {"MEDVLP_BOOK_BUILD": "1"}


def _terminal(text: str) -> str:
    """What a terminal shows for ``text``: a carriage return restarts its line, so only the last state stays."""
    out = []
    for line in text.split("\n"):
        if "\r" in line:
            states = [part for part in line.split("\r") if part]
            line = states[-1] if states else ""
        out.append(line)
    return "\n".join(out)


def clean_outputs(nb, root: str | Path | None = None):
    """Make an executed notebook fit for a page (in place; returns ``nb``).

    * **Progress bars**: a bar redraws by writing ``\\r`` and its new state; a stored notebook keeps every
      redraw as text, and ``TQDM_MININTERVAL`` cannot prevent that because ``tqdm.set_postfix`` (the trainer
      shows loss and learning rate) and ``refresh()`` redraw whatever the interval. So each cell's streams are
      read as a terminal would show them: consecutive pieces of one stream joined, every line reduced to its
      last state (a bar continued in a later piece of the same stream replaces its earlier state), and lines
      that a closing bar blanked (``leave=False``) dropped. One final line per bar is left.
    * papermill's ``injected-parameters`` cell is tagged ``remove-cell`` (the page shows the real parameters cell).
    * paths on this machine are shortened: the repository root to a relative path, an environment's
      ``.../site-packages/`` to ``site-packages/``.
    """
    root = str(_root(root).resolve())
    site = re.compile(r"(?:/[^\s'\"()<>:]+)+/site-packages/")

    def scrub(text: str) -> str:
        return site.sub("site-packages/", text.replace(root + "/", "").replace(root, "."))

    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        merged = []
        for o in cell.get("outputs", []):
            if (o.output_type == "stream" and merged and merged[-1].output_type == "stream"
                    and merged[-1].name == o.name):
                merged[-1].text += o.text
            else:
                merged.append(o)
        open_line = {}  # stream name -> the output whose text ends inside an unfinished line
        for o in merged:
            if o.output_type != "stream":
                continue
            if o.text.startswith("\r") and o.name in open_line:  # continues (and overwrites) that line
                prev = open_line.pop(o.name)
                prev.text = prev.text[:prev.text.rfind("\n") + 1]
            if o.text and not o.text.endswith("\n"):
                open_line[o.name] = o
        for o in merged:
            if o.output_type != "stream":
                continue
            text = _terminal(o.text)
            if o.name == "stderr":
                text = "".join(ln for ln in text.splitlines(keepends=True) if ln.strip())
            o.text = scrub(text)
        kept = []
        for o in merged:
            if o.output_type == "stream":
                if not o.text.strip():
                    continue
            elif o.output_type in ("display_data", "execute_result"):
                for mime in ("text/plain", "text/html", "text/markdown"):
                    if isinstance(o.get("data", {}).get(mime), str):
                        o.data[mime] = scrub(o.data[mime])
            kept.append(o)
        cell.outputs = kept
    return nb


def execute_notebook(src: str | Path, dst: str | Path, parameters: dict | None = None,
                     timeout: int = 1800, log_output: bool = False) -> float:
    """Execute one jupytext source with papermill into ``dst``; returns wall seconds.

    Raises ``papermill.PapermillExecutionError`` (the first failing cell, with its traceback) if any
    cell fails, so a crashing notebook fails the build.
    """
    import papermill as pm
    src, dst = Path(src), Path(dst)
    nb = _read(src)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise ValueError(f"{src} has no cell tagged 'parameters' (every chapter needs one with PROFILE)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    # the kernel inherits this process' environment: a headless MPLBACKEND (Agg, set for the tests) would
    # make every figure invisible in the executed notebook, so kernels always get the inline backend. Progress
    # bars stay on (KERNEL_ENV makes tqdm redraw at most every 60 s where nothing forces a redraw, and drops
    # tqdm's "IProgress not found" notice); clean_outputs keeps one final line per bar in the stored copy.
    env = {"MPLBACKEND": INLINE_BACKEND, **BOOK_KERNEL_ENV,
           **{k: v for k, v in KERNEL_ENV.items() if k not in os.environ}}
    t0 = time.perf_counter()
    with environ(**env):
        pm.execute_notebook(nb, str(dst), parameters=parameters or {}, cwd=str(src.parent),
                            kernel_name="python3", progress_bar=False, log_output=log_output,
                            execution_timeout=timeout, report_mode=False)
    import nbformat
    nbformat.write(clean_outputs(nbformat.read(dst, as_version=4)), dst)
    return time.perf_counter() - t0


def _execute_job(src: str, dst: str, parameters: dict) -> float:
    return execute_notebook(src, dst, parameters)


def execute_all(profile: str = "fast", names=None, root: str | Path | None = None,
                extra: dict | None = None, jobs: int = 1) -> dict[str, float]:
    """Execute every chapter in ``profile``; prints a timing table; raises if any notebook failed.

    ``jobs > 1`` runs that many notebooks at once, each kernel limited to one intra-op thread
    (``OMP_NUM_THREADS=1`` unless already set): on a 2-core machine two single-threaded kernels finish the
    book sooner than one kernel using both cores, because the book's small models scale poorly across threads.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    root = _root(root)
    out_dir = root / EXECUTED
    timings, failures = {}, {}
    sources = notebook_sources(root, names)
    params = {"PROFILE": profile, **(extra or {})}
    if jobs > 1:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            if not os.environ.get(var):
                os.environ[var] = "1"
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {}
        for src in sources:
            print(f"[execute] {src.name} (PROFILE={profile}) ...", flush=True)
            futures[pool.submit(_execute_job, str(src), str(out_dir / f"{src.stem}.ipynb"), params)] = src
        for fut in concurrent.futures.as_completed(futures):
            src = futures[fut]
            try:
                timings[src.stem] = fut.result()
                print(f"[execute] {src.name} ok in {timings[src.stem]:.1f}s", flush=True)
            except Exception as exc:  # report every failure, then fail the build
                failures[src.stem] = f"{type(exc).__name__}: {str(exc)[-2000:]}"
                print(f"[execute] {src.name} FAILED\n{failures[src.stem]}", flush=True)
    timings = {s.stem: timings[s.stem] for s in sources if s.stem in timings}
    (root / BUILD).mkdir(exist_ok=True)
    (root / BUILD / "execution_times.json").write_text(json.dumps({"profile": profile, "jobs": jobs,
                                                                   "seconds": timings, "failures": failures},
                                                                  indent=1))
    print("\nnotebook                                   seconds")
    for k, v in timings.items():
        print(f"{k:<42} {v:8.1f}")
    if failures:
        raise RuntimeError(f"{len(failures)} notebook(s) failed: {sorted(failures)}")
    return timings


def build_html(root: str | Path | None = None, strict: bool = True) -> Path:
    """Stage prose + executed notebooks and run ``jupyter-book build``; returns ``_build/html/index.html``."""
    root = _root(root)
    stage = root / STAGE
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, stage / name)
    shutil.copytree(root / "book", stage / "book")
    executed = root / EXECUTED
    expected = [p.stem for p in notebook_sources(root)]
    missing = [s for s in expected if not (executed / f"{s}.ipynb").exists()]
    if missing:
        raise FileNotFoundError(f"executed notebooks missing in {executed}: {missing} (run `make execute`)")
    (stage / "notebooks").mkdir()
    for stem in expected:
        shutil.copy2(executed / f"{stem}.ipynb", stage / "notebooks" / f"{stem}.ipynb")
    for extra in ("results",):
        if (root / extra).is_dir():
            shutil.copytree(root / extra, stage / extra)
    # an incremental build does not recopy an edited book/_static file (e.g. medvlp.css): build afresh then
    out_static, own = root / BUILD / "html" / "_static", root / "book" / "_static"
    if (out_static.is_dir() and own.is_dir()
            and any(f.is_file() and (not (out_static / f.relative_to(own)).is_file()
                                     or (out_static / f.relative_to(own)).read_bytes() != f.read_bytes())
                    for f in own.rglob("*"))):
        for old in ("html", ".doctrees", "jupyter_execute"):
            shutil.rmtree(root / BUILD / old, ignore_errors=True)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(stage), "--path-output", str(root),
           "--builder", "html"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    print("[html]", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=root)
    index = root / BUILD / "html" / "index.html"
    if not index.exists():
        raise FileNotFoundError(f"{index} was not produced by jupyter-book")
    return index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medvlp_lib.notebooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("execute", help="execute notebooks with papermill into _build/executed")
    ex.add_argument("--profile", default="fast", choices=PROFILES)
    ex.add_argument("--notebooks", nargs="*", default=["all"], help="stems like 01_data_and_clip_baseline")
    ex.add_argument("--jobs", type=int, default=1, help="notebooks executed at once (one thread each when > 1)")
    sub.add_parser("build-html", help="build the HTML book from the executed notebooks")
    sub.add_parser("sync", help="write paired .ipynb files from the jupytext sources")
    sub.add_parser("check-sync", help="fail if a paired .ipynb is missing or out of sync")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.cmd == "execute":
        names = args.notebooks if args.notebooks else ["all"]
        if len(names) == 1 and names[0] == "all":
            names = None
        execute_all(args.profile, names, jobs=args.jobs)
    elif args.cmd == "build-html":
        print(build_html())
    elif args.cmd == "sync":
        for p in sync():
            print("wrote", p)
    elif args.cmd == "check-sync":
        problems = check_sync()
        for p in problems:
            print(p)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
