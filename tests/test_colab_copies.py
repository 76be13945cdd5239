"""The Colab copies: MyST rendered for plain Jupyter, the setup cell, ``glue`` outside the book, the [book] extra."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from medvlp_lib import notebooks as nbrun
from medvlp_lib.utils import project_root

ROOT = project_root()


# ------------------------------------------------------------------------------------------------ rendering
def _project(tmp_path: Path) -> Path:
    """A tiny book: config, references, one chapter and its executed copy with glued values."""
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://github.com/someone/medvlp\n  branch: dev\n")
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "references.bib").write_text(textwrap.dedent("""\
        @article{pham2025msd, title = {MSD}, author = {Pham, Phuc and Pham, Nhu and Ly, Ngoc Quoc}, year = {2025}}
        @article{he2020moco, title = {MoCo}, author = {He, Kaiming and Fan, Haoqi}, year = {2020}}
        """))
    (tmp_path / "book" / "glossary.md").write_text("# Glossary\n")
    (tmp_path / "notebooks").mkdir()
    return tmp_path


def _ctx(root: Path, glue=None) -> nbrun.RenderContext:
    return nbrun.RenderContext(root, glue or {}, doc="notebooks/01_x")


def test_roles_become_numbers_citations_and_links(tmp_path):
    root = _project(tmp_path)
    (root / "notebooks" / "02_next.md").write_text("# 02 · The next chapter\n")
    glue = {"n": {"text/plain": "21"}, "auc": {"text/plain": "0.87654"}, "s": {"text/plain": "'MSD beats CLIP'"}}
    ctx = _ctx(root, glue)
    md = ("We track {glue:text}`n` claims; AUC {glue:text}`auc:.2f`; {glue:text}`s`. As {cite}`pham2025msd` and "
          "{cite:t}`he2020moco` show, see {doc}`/notebooks/02_next`, {doc}`the glossary <../book/glossary>`, "
          "{ref}`the loss <msd-loss>`, {term}`InfoNCE` and {math}`\\alpha`.")
    out = nbrun.render_markdown(md, ctx)
    assert "We track 21 claims; AUC 0.88; MSD beats CLIP." in out
    assert "[Pham et al., 2025]" in out and "He and Fan (2020)" in out
    assert ("[02 · The next chapter](https://colab.research.google.com/github/someone/medvlp/blob/dev/"
            "notebooks/02_next.ipynb)") in out
    assert "[the glossary](https://github.com/someone/medvlp/blob/dev/book/glossary.md)" in out
    assert "the loss" in out and "InfoNCE" in out and "$\\alpha$" in out
    assert not nbrun.UNRENDERED.search(out), out
    assert ctx.missing == []


def test_directives_become_plain_markdown_and_code_is_left_alone(tmp_path):
    ctx = _ctx(_project(tmp_path), {"x": {"text/plain": "3"}})
    md = textwrap.dedent("""\
        (my-label)=
        % a MyST comment
        ```{note}
        Value {glue:text}`x`.
        ```

        :::{dropdown} Solution
        The answer is {glue:text}`x`.
        :::

        ```{admonition} Why
        :class: dropdown
        Because.
        ```

        ```{math}
        L = -\\log p
        ```

        ```python
        glue("x", 3)  # {glue:text}`x` stays as written inside code
        ```
        """)
    out = nbrun.render_markdown(md, ctx)
    assert "(my-label)=" not in out and "MyST comment" not in out
    assert "> **Note**" in out and "> Value 3." in out
    assert "<details>\n<summary>Solution</summary>" in out and "The answer is 3." in out
    assert "<summary>Why</summary>" in out and "Because." in out
    assert "$$\nL = -\\log p\n$$" in out
    assert "# {glue:text}`x` stays as written inside code" in out
    assert not nbrun.UNRENDERED.search(out.replace("{glue:text}`x` stays", ""))


def test_a_value_missing_from_the_executed_copy_becomes_the_fallback_phrase(tmp_path):
    ctx = _ctx(_project(tmp_path))
    out = nbrun.render_markdown("We track {glue:text}`n_claims` claims.", ctx)
    assert out == "We track " + nbrun.FALLBACK.format(name="n_claims") + " claims."
    assert ctx.missing == ["n_claims"]
    with pytest.raises(KeyError, match="nobody2020"):
        nbrun.render_markdown("{cite}`nobody2020`", ctx)


def _chapter(root: Path, prose: str):
    nb_dir = root / "notebooks"
    (nb_dir / "01_x.md").write_text(textwrap.dedent(f"""\
        ---
        jupytext:
          text_representation:
            extension: .md
            format_name: myst
        kernelspec:
          display_name: Python 3
          language: python
          name: python3
        ---

        # 01 · x

        ```{{code-cell}} ipython3
        :tags: [parameters]

        PROFILE = "fast"
        ```

        {prose}
        """))


def _executed(root: Path, values: dict):
    cells = [new_code_cell("glue(...)", outputs=[
        new_output("display_data", data={f"application/papermill.record/text/plain": repr(v)},
                   metadata={"scrapbook": {"name": k, "mime_prefix": "application/papermill.record/"}})
        for k, v in values.items()])]
    path = root / nbrun.EXECUTED / "01_x.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=cells), path)


def test_sync_renders_from_the_executed_copy_and_check_sync_follows_the_myst_source(tmp_path):
    root = _project(tmp_path)
    _chapter(root, "We track {glue:text}`n` claims.")
    _executed(root, {"n": 21})
    assert [p.name for p in nbrun.sync(root)] == ["01_x.ipynb"]
    src = (root / "notebooks" / "01_x.md").read_text()
    assert nbrun.SETUP_FIRST_LINE in src and "https://github.com/someone/medvlp" in src  # the setup cell, written
    nb = nbformat.read(root / "notebooks" / "01_x.ipynb", as_version=4)
    md = [c for c in nb.cells if c.cell_type == "markdown"]
    assert md[-1].source == "We track 21 claims." and md[-1].metadata["medvlp"]["myst_sha1"]
    assert nbrun.check_sync(root) == [] and nbrun.colab_fallbacks(root) == {}
    assert nbrun.sync(root) == []  # nothing changed: nothing written
    # without executed copies the numbers already in the .ipynb stay
    (root / nbrun.EXECUTED / "01_x.ipynb").unlink()
    assert nbrun.sync(root) == []
    # a prose edit puts the pair out of sync until `make sync`
    _chapter(root, "We track {glue:text}`n` claims, all of them.")
    nbrun.write_setup_cells(root)
    assert any("differs" in p for p in nbrun.check_sync(root))
    nbrun.sync(root)
    assert nbrun.colab_fallbacks(root) == {"01_x": ["n"]}  # no executed copy: the phrase shows, a test fails
    _executed(root, {"n": 22})
    nbrun.sync(root)
    assert nbrun.check_sync(root) == [] and nbrun.colab_fallbacks(root) == {}


def test_committed_colab_copies_show_numbers_not_roles():
    """Every Colab copy was rendered from an executed copy: no fallback phrase, no MyST markup (check_sync)."""
    assert nbrun.colab_fallbacks(ROOT) == {}
    assert nbrun.check_sync(ROOT) == []


# ------------------------------------------------------------------------------------------------ setup cell
def test_every_chapter_starts_with_the_setup_cell_for_the_configured_repository():
    import yaml
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    for src in nbrun.notebook_sources(ROOT):
        nb = nbrun._read(src)
        assert nbrun.setup_cell_problems(nb, ROOT) == [], src.name
        first = next(c for c in nb.cells if c.cell_type == "code")
        assert f'"{url}"' in first.source and first.metadata["tags"] == ["remove-cell"]


def _env_without_this_checkout() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MEDVLP_INSTALL", "VIRTUAL_ENV")}


def test_setup_cell_does_nothing_where_the_library_imports(tmp_path):
    env = {**os.environ, "MEDVLP_INSTALL": str(tmp_path / "does-not-exist"), "PYTHONPATH": str(ROOT)}
    code = nbrun.setup_cell_source(ROOT) + "\nimport medvlp_lib; print('library at', medvlp_lib.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "library at" in out.stdout and list(tmp_path.iterdir()) == []  # nothing cloned, nothing installed


BACKEND = '''\
"""A PEP 517/660 backend with no requirements (so pip needs no index): the wheel is a .pth to the source."""
import base64, hashlib, os, zipfile

NAME, VERSION = "medvlp_lib", "0.0.1"
META = f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\nProvides-Extra: book\\n"


def _wheel(directory, files):
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    info = f"{NAME}-{VERSION}.dist-info"
    files = {**files, f"{info}/METADATA": META,
             f"{info}/WHEEL": "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}
    record = []
    with zipfile.ZipFile(os.path.join(directory, name), "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(text.encode())}")
        z.writestr(f"{info}/RECORD", "\\n".join(record + [f"{info}/RECORD,,"]) + "\\n")
    return name


def get_requires_for_build_wheel(config_settings=None):
    return []


get_requires_for_build_editable = get_requires_for_build_wheel


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, {f"{NAME}.pth": os.path.abspath(".") + "\\n"})


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise NotImplementedError("editable installs only")


def build_sdist(sdist_directory, config_settings=None):
    raise NotImplementedError("editable installs only")
'''


def _fake_repository(tmp_path: Path) -> Path:
    """A git repository shaped like this one: pyproject.toml, medvlp_lib/book.py with setup_notebook."""
    repo = tmp_path / "src"
    (repo / "medvlp_lib").mkdir(parents=True)
    (repo / "pyproject.toml").write_text('[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                                         'backend-path = ["."]\n')
    (repo / "backend.py").write_text(BACKEND)
    (repo / "medvlp_lib" / "__init__.py").write_text("")
    (repo / "medvlp_lib" / "book.py").write_text(
        "import os\n\ndef setup_notebook():\n    print('SETUP FROM', os.path.dirname(os.path.abspath(__file__)))\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "fake"], check=True)
    return repo


@pytest.mark.slow
def test_setup_cell_clones_and_installs_from_MEDVLP_INSTALL(tmp_path):
    """Where medvlp_lib is missing, the cell clones MEDVLP_INSTALL, pip-installs it editable, imports it at once."""
    repo = _fake_repository(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    code = nbrun.setup_cell_source(ROOT)
    for name, source in (("clone", str(repo / ".git")), ("checkout", str(repo))):
        work = tmp_path / f"work-{name}"
        work.mkdir()
        env = {**_env_without_this_checkout(), "MEDVLP_INSTALL": source, "PIP_NO_INDEX": "1"}
        out = subprocess.run([str(python), "-c", code], cwd=work, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        where = work / "medvlp" if name == "clone" else repo
        assert f"SETUP FROM {where / 'medvlp_lib'}" in out.stdout
        assert (work / "medvlp" / "pyproject.toml").exists() == (name == "clone")
        # installed for good: a new process (a restarted kernel) imports it without help
        again = subprocess.run([str(python), "-c", "import medvlp_lib.book as b; b.setup_notebook()"], cwd=tmp_path,
                               env=_env_without_this_checkout(), capture_output=True, text=True, timeout=120)
        assert f"SETUP FROM {where / 'medvlp_lib'}" in again.stdout, again.stderr
        subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "medvlp_lib"], check=True, timeout=120)


# ------------------------------------------------------------------------------------------------ glue
def test_glue_outside_the_book_shows_each_value_and_inside_records_it(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from medvlp_lib import book
    InteractiveShell.instance()
    monkeypatch.delenv(book.BOOK_ENV, raising=False)
    with capture_output() as cap:
        book.glue("n_claims", 21, display=False)
        book.glue("label", "MSD", display=False)
    assert [o.data["text/plain"] for o in cap.outputs] == ["n_claims = 21", "label = MSD"]
    monkeypatch.setenv(book.BOOK_ENV, "1")
    with capture_output() as cap:
        book.glue("n_claims", 21, display=False)
    (out,) = cap.outputs
    assert out.metadata["scrapbook"]["name"] == "n_claims"
    assert out.data["application/papermill.record/text/plain"] == "21"
    with pytest.raises(ValueError, match="name"):
        book.glue("", 1)


# ------------------------------------------------------------------------------------------------ [book] extra
def _imports(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _requirement_closure(names: list[str]) -> set[str]:
    from importlib.metadata import PackageNotFoundError, requires
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    todo, seen = [norm(n) for n in names], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = requires(name) or []
        except PackageNotFoundError:
            continue
        for r in reqs:
            if "extra ==" in r:
                continue
            todo.append(norm(re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0]))
    return seen


def test_the_book_extra_holds_every_import_of_the_chapters_and_the_library():
    """What `pip install -e .[book]` brings (core + [book] and their requirements) covers every import."""
    import tomllib
    from importlib.metadata import packages_distributions
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [re.split(r"[\s;<>=!~\[]", r, maxsplit=1)[0]
                for r in project["dependencies"] + project["optional-dependencies"]["book"]]
    have = _requirement_closure(declared)
    dists = packages_distributions()
    build_only = {"myst_nb": "medvlp_lib/book.py, only when the book's runner executes a chapter",
                  "pydicom": "real DICOM datasets only (gpu profile); the loader's ImportError names the package",
                  "xgboost": "the public MoMKD gene selection's own classifier, optional (method='xgboost'); "
                             "scikit-learn's is the default"}
    sources = {p: "\n".join(c.source for c in nbrun._read(p).cells if c.cell_type == "code")
               for p in nbrun.notebook_sources(ROOT)}
    sources.update({p: p.read_text() for p in (ROOT / "medvlp_lib").rglob("*.py") if p.name != "notebooks.py"})
    missing = {}
    for path, code in sources.items():
        for mod in _imports(code) - set(sys.stdlib_module_names) - {"medvlp_lib", "benchmarks", "__future__"}:
            if mod in build_only:
                continue
            owners = {re.sub(r"[-_.]+", "-", d).lower() for d in dists.get(mod, [])}
            if not owners & have:
                missing.setdefault(mod, []).append(path.name)
    assert not missing, f"imports not provided by the dependencies + [book]: {missing}"


def test_paper_pages_claims_tables_match_the_declared_claims():
    """book/papers/*.md list exactly the claims the experiment modules declare (written by `make sync`)."""
    from medvlp_lib import ledger, notebooks
    for page, text in notebooks.paper_pages().items():
        assert page.read_text() == text, f"{page}: its claims table is out of date (run `make sync`)"
    papers = {c.paper for c in ledger.declared_claims() if not c.paper.startswith("new")}
    assert papers <= set(notebooks.PAPER_PAGES), f"papers without a page: {papers - set(notebooks.PAPER_PAGES)}"
    for paper, page in notebooks.PAPER_PAGES.items():
        text = (notebooks.project_root() / "book" / "papers" / f"{page}.md").read_text()
        for c in ledger.declared_claims():
            if c.paper == paper:
                assert f"`{c.result}`" in text and c.claim.split(" (")[0] in text, (page, c.id)
