"""Notebook sources, their Colab pairs, and the papermill runner behind `make book`."""
from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import nbformat
import pytest

from medvlp_lib import notebooks as nbrun
from medvlp_lib.utils import project_root

ROOT = project_root()
SOURCES = nbrun.notebook_sources(ROOT)


def test_there_are_chapters_and_a_ledger():
    stems = [p.stem for p in SOURCES]
    assert "01_data_and_clip_baseline" in stems and "09_claims_ledger" in stems


def test_ipynb_pairs_are_in_sync():
    assert nbrun.check_sync(ROOT) == []


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_notebook_has_a_fast_parameters_cell(src):
    nb = nbrun._read(src)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{src.name}: exactly one cell must be tagged 'parameters'"
    assert 'PROFILE = "fast"' in params[0].source


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_notebook_does_not_hardcode_cuda(src):
    text = src.read_text()
    assert ".cuda()" not in text and "'cuda:0'" not in text and '"cuda:0"' not in text


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_toc_lists_every_notebook(src):
    assert f"notebooks/{src.stem}" in _toc_files()


def _toc_files() -> set[str]:
    import yaml

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                yield node["file"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
    return set(walk(yaml.safe_load((ROOT / "_toc.yml").read_text())))


def test_toc_entries_exist():
    """Every file the table of contents names exists as a page or a notebook source."""
    for entry in _toc_files() | {yaml_root()}:
        assert any((ROOT / f"{entry}{ext}").exists() for ext in (".md", ".ipynb")), f"_toc.yml names {entry}"


def yaml_root() -> str:
    import yaml
    return yaml.safe_load((ROOT / "_toc.yml").read_text())["root"]


def _write_md(path: Path, body: str, params: bool = True):
    cells = ""
    if params:
        cells += "```{code-cell} ipython3\n:tags: [parameters]\n\nPROFILE = \"fast\"\n```\n\n"
    cells += f"```{{code-cell}} ipython3\n{body}\n```\n"
    path.write_text(textwrap.dedent("""\
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

        # tiny

        """) + cells)


@pytest.mark.notebook
def test_runner_injects_parameters_and_fails_on_crash(tmp_path):
    ok = tmp_path / "01_ok.md"
    _write_md(ok, "assert PROFILE == 'cpu', PROFILE\nprint('done')")
    nbrun.execute_notebook(ok, tmp_path / "out" / "01_ok.ipynb", {"PROFILE": "cpu"}, timeout=120)
    executed = nbformat.read(tmp_path / "out" / "01_ok.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "remove-cell" in injected[0].metadata["tags"]  # the page shows the real parameters cell
    bad = tmp_path / "02_bad.md"
    _write_md(bad, "raise RuntimeError('boom')")
    with pytest.raises(Exception, match="boom"):
        nbrun.execute_notebook(bad, tmp_path / "out" / "02_bad.ipynb", {"PROFILE": "fast"}, timeout=120)
    noparams = tmp_path / "03_noparams.md"
    _write_md(noparams, "print(1)", params=False)
    with pytest.raises(ValueError, match="parameters"):
        nbrun.execute_notebook(noparams, tmp_path / "out" / "03.ipynb")


def _stream(name, text):
    return nbformat.v4.new_output("stream", name=name, text=text)


def test_clean_outputs_keeps_one_final_line_per_progress_bar():
    """The stored shapes seen in the book: a bar redrawn per step (set_postfix), split over many outputs,
    interrupted by a print, and a bar that clears itself (leave=False)."""
    bar = [_stream("stderr", f"\rCLIP: {i:3d}%|      | {i}/48 [loss={i}]") for i in range(0, 49, 8)]
    cell = nbformat.v4.new_code_cell("run()", outputs=[
        _stream("stdout", "[clip] profile=fast\n"),
        _stream("stderr", "\rrendering:   0%|   | 0/768"), _stream("stderr", "\r                 "),
        _stream("stderr", "\r"),
        *bar[:3], _stream("stdout", f"note from {project_root()}/results/tmp/x.json\n"), *bar[3:],
        _stream("stderr", "\n"), _stream("stdout", "done\n")])
    nb = nbformat.v4.new_notebook(cells=[cell])
    nbrun.clean_outputs(nb, project_root())
    outs = [(o.name, o.text) for o in nb.cells[0].outputs]
    assert outs == [("stdout", "[clip] profile=fast\n"), ("stdout", "note from results/tmp/x.json\n"),
                    ("stderr", "CLIP:  48%|      | 48/48 [loss=48]\n"), ("stdout", "done\n")], outs


@pytest.mark.notebook
def test_a_real_progress_bar_is_stored_as_one_line(tmp_path):
    """tqdm through the runner, redrawn every step by set_postfix (as the trainer does) and a leave=False bar."""
    src = tmp_path / "01_bars.md"
    _write_md(src, "from tqdm.auto import tqdm\nimport time\n"
                   "bar = tqdm(range(30), desc='train')\nfor i in bar:\n"
                   "    bar.set_postfix(loss=i)\n    time.sleep(0.01)\n"
                   "for i in tqdm(range(30), desc='render', leave=False):\n    time.sleep(0.01)\nprint('done')")
    nbrun.execute_notebook(src, tmp_path / "out.ipynb", {"PROFILE": "fast"}, timeout=120)
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    streams = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"]
    text = "".join(o.text for o in streams if o.name == "stderr")
    assert "\r" not in text and text.count("train:") == 1 and "render" not in text, text
    assert "30/30" in text and "loss=29" in text


@pytest.mark.notebook
def test_chapter_figures_are_drawn_legible_and_say_so(tmp_path):
    """After the setup cell's setup_notebook(), figures go through medvlp_lib.book.figure_png: text that the
    book's column would shrink below MIN_FONT_PX is enlarged, and the PNG records its smallest font."""
    import io

    from PIL import Image

    from medvlp_lib import book
    src = tmp_path / "01_fig.md"
    _write_md(src, "from medvlp_lib.book import setup_notebook\nsetup_notebook()\nimport matplotlib.pyplot as plt\n"
                   "fig, axes = plt.subplots(1, 4, figsize=(14, 3))\naxes[0].set_title('tiny', fontsize=6)")
    nbrun.execute_notebook(src, tmp_path / "out.ipynb", {"PROFILE": "fast"}, timeout=120)
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    (png,) = [o.data["image/png"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    image = Image.open(io.BytesIO(__import__("base64").b64decode(png)))
    pt, dpi = float(image.text["medvlp-min-font-pt"]), float(image.text["medvlp-dpi"])
    shown = pt * dpi / 72 * min(1.0, book.COLUMN_PX / image.size[0])
    assert shown >= book.MIN_FONT_PX - 0.1, (pt, dpi, image.size)


@pytest.mark.notebook
def test_figures_are_captured_even_with_a_headless_backend(tmp_path, monkeypatch):
    """The Makefile exports MPLBACKEND=Agg for the tests; executed chapters must still contain their figures."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    src = tmp_path / "01_fig.md"
    _write_md(src, "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([0, 1], [1, 0])")
    nbrun.execute_notebook(src, tmp_path / "out.ipynb", {"PROFILE": "fast"}, timeout=120)
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert os.environ["MPLBACKEND"] == "Agg"  # the runner restores the caller's environment


@pytest.mark.notebook
def test_execute_all_in_parallel_reports_every_failure(tmp_path, monkeypatch):
    """`make book` runs two notebooks at once: both run, the failure is reported and fails the build."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    (tmp_path / "notebooks").mkdir()
    _write_md(tmp_path / "notebooks" / "01_ok.md", "import os\nassert os.environ['OMP_NUM_THREADS'] == '1'")
    _write_md(tmp_path / "notebooks" / "02_bad.md", "raise RuntimeError('boom')")
    with pytest.raises(RuntimeError, match="02_bad"):
        nbrun.execute_all("fast", root=tmp_path, jobs=2)
    times = json.loads((tmp_path / nbrun.BUILD / "execution_times.json").read_text())
    assert set(times["seconds"]) == {"01_ok"} and set(times["failures"]) == {"02_bad"} and times["jobs"] == 2
    with pytest.raises(ValueError, match="jobs"):
        nbrun.execute_all("fast", root=tmp_path, jobs=0)


@pytest.mark.notebook
def test_ledger_notebook_smoke(tmp_path):
    """The same runner `make book` uses, on the (cheap) ledger chapter."""
    src = ROOT / "notebooks" / "09_claims_ledger.md"
    nbrun.execute_notebook(src, tmp_path / "09.ipynb", {"PROFILE": "fast"}, timeout=600)
    nb = nbformat.read(tmp_path / "09.ipynb", as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


def test_executed_book_copies_are_clean():
    """After `make book`, every executed chapter exists, ran in the fast profile, and holds no error output."""
    executed = ROOT / nbrun.EXECUTED
    if not executed.is_dir():
        pytest.skip("no executed notebooks here: `make book` has not run in this checkout")
    times = json.loads((ROOT / nbrun.BUILD / "execution_times.json").read_text())
    assert times["failures"] == {}
    if set(times["seconds"]) != {src.stem for src in SOURCES}:  # e.g. one chapter executed by hand
        pytest.skip("the last execution here covered only some chapters; `make book` executes them all")
    for src in SOURCES:
        path = executed / f"{src.stem}.ipynb"
        assert path.exists(), f"{path} missing after the book build"
        nb = nbformat.read(path, as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
        assert not errors, f"{src.stem} has error outputs"
        streams = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.output_type == "stream"]
        text = "".join(o.text for o in streams)
        assert "\r" not in text, f"{src.stem} stores progress-bar redraws"
        assert str(ROOT) not in text and not re.search(r"/\S+/site-packages/", text), \
            f"{src.stem}: a path of this machine in an output"
        warnings = [ln for o in streams if o.name == "stderr" for ln in o.text.splitlines() if "Warning" in ln]
        assert not warnings, f"{src.stem} shows warnings: {warnings[:3]}"
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert all("remove-cell" in c.metadata["tags"] for c in injected)
        pngs = [o.data["image/png"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                if "image/png" in o.get("data", {})]
        unstamped = [i for i, p in enumerate(pngs) if b"medvlp-min-font-pt" not in __import__("base64").b64decode(p)]
        assert not unstamped, f"{src.stem}: figures {unstamped} were not drawn by medvlp_lib.book.figure_png"
        assert os.path.getmtime(path) >= os.path.getmtime(src), f"{src.stem}: executed copy older than its source"
        if "plt." in src.read_text():  # a chapter that draws must show its figures in the book
            images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                      if "image/png" in o.get("data", {})]
            assert images, f"{src.stem} draws figures but its executed copy holds no image output"
