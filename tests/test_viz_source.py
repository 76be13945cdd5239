"""medvlp_lib.viz.source: the source of a loss next to its equation, and named docstring sections."""
from __future__ import annotations

import ast
import inspect
import re
import types

import pytest

from medvlp_lib.notebooks import notebook_sources
from medvlp_lib.utils import project_root
from medvlp_lib.viz.source import doc_headings, doc_markdown, doc_section, resolve, show_source, source_text


def _module(doc: str) -> types.ModuleType:
    mod = types.ModuleType("fake_mod")
    mod.__doc__ = doc
    return mod


DOC = """One-line summary.

Picture model
-------------
First section, line one.
line two.

Limits (what it cannot do)
--------------------------
No lateral view.

Why alpha = 1 fails: the target equals the prediction,
so the gradient is zero.

Generative model (one world):

* slides are blobs;
* omics carry the label.

Unrelated paragraph after the list.
"""


def test_underlined_section_is_returned_without_its_heading():
    mod = _module(DOC)
    assert doc_section(mod, "Picture model") == "First section, line one.\nline two."
    assert doc_headings(mod) == ["Picture model", "Limits (what it cannot do)"]


def test_heading_matches_a_prefix_of_the_heading_line():
    assert doc_section(_module(DOC), "Limits").startswith("No lateral view.")


def test_run_in_heading_returns_its_paragraph_and_the_list_it_introduces():
    mod = _module(DOC)
    assert doc_section(mod, "Why alpha = 1") == ("Why alpha = 1 fails: the target equals the prediction,\n"
                                                  "so the gradient is zero.")
    gen = doc_section(mod, "Generative model")
    assert gen.startswith("Generative model (one world):") and "* omics carry the label." in gen
    assert "Unrelated" not in gen


def test_missing_section_names_the_object_heading_and_existing_headings():
    mod = _module(DOC)
    with pytest.raises(LookupError, match=r"fake_mod: no docstring section matches the heading 'Pictures'.*"
                                          r"Picture model"):
        doc_section(mod, "Pictures ")
    with pytest.raises(ValueError, match="heading"):
        doc_section(mod, "  ")
    with pytest.raises(ValueError, match="no docstring"):
        doc_section(_module(""), "x")


def test_ambiguous_heading_is_an_error():
    mod = _module("Top.\n\nPart A\n------\nx\n\nPart B\n------\ny\n")
    with pytest.raises(LookupError, match="2 docstring section"):
        doc_section(mod, "Part")


def test_doc_markdown_converts_math_blocks_and_literals():
    text = "Intro ``code`` and :func:`f`:\n\n.. math:: a = b\n            + c\n\nAfter."
    md = doc_markdown(text)
    assert "$$\na = b + c\n$$" in md and "`code`" in md and "`f`" in md and "``" not in md
    assert md.endswith("After.")


def _loss(x, *, scale: float = 1.0):
    """A loss.

    Long explanation that the chapter does not need to repeat.
    """
    if scale <= 0:
        raise ValueError("scale must be positive")
    for v in (x,):
        if v is None:
            raise TypeError("x")
    y = x * scale
    return y


def test_source_text_shortens_the_docstring_and_folds_input_checks():
    full = source_text(_loss, docstring="full")
    assert "Long explanation" in full and "raise ValueError" in full
    short = source_text(_loss)
    assert '"""A loss. ..."""' in short and "Long explanation" not in short and "raise ValueError" in short
    folded = source_text(_loss, checks=False)
    assert "raise ValueError" not in folded and "5 lines of input checks" in folded and "y = x * scale" in folded
    assert '"""' not in source_text(_loss, docstring="none")
    for text in (full, short, folded):
        ast.parse(text)  # still valid Python
    with pytest.raises(ValueError, match="docstring"):
        source_text(_loss, docstring="some")
    with pytest.raises(TypeError, match="no Python source"):
        source_text(len)


def test_show_source_renders_the_library_code_with_its_location():
    from medvlp_lib.methods.contrastive import clip_loss
    block = show_source(clip_loss)
    md = block._repr_markdown_()
    assert "medvlp_lib.methods.contrastive.clip_loss" in md and "medvlp_lib/methods/contrastive.py" in md
    assert md.count("```") == 2 and "def clip_loss(" in md and "F.cross_entropy" in md
    start, end = map(int, re.search(r"lines (\d+)–(\d+)", md).groups())
    assert end > start


def _doc_section_calls():
    """Every ``doc_section("<dotted name>", "<heading>")`` call in the chapter sources; any other form is an error."""
    pattern = re.compile(r"doc_section\(\s*(['\"])(.+?)\1\s*,\s*(['\"])(.+?)\3\s*\)")
    calls = []
    for src in notebook_sources(project_root()):
        text = src.read_text()
        found = [(src.stem, m.group(2), m.group(4)) for m in pattern.finditer(text)]
        assert len(found) == text.count("doc_section("), f"{src.stem}: call doc_section with two string literals"
        calls += found
    return calls


def test_every_notebook_doc_section_call_finds_its_section():
    """Chapters call doc_section with a dotted library name and a literal heading; each section must exist."""
    calls = _doc_section_calls()
    assert len({stem for stem, *_ in calls}) >= 5, calls  # the chapters that quote docstrings
    for stem, dotted, heading in calls:
        assert dotted.startswith("medvlp_lib."), f"{stem}: doc_section must name the object by its dotted path"
        assert doc_section(dotted, heading).strip(), (stem, dotted, heading)


def test_dotted_names_resolve_modules_before_attributes():
    import medvlp_lib.data
    assert callable(medvlp_lib.data.render)  # the package exports the function ...
    assert inspect.ismodule(resolve("medvlp_lib.data.render"))  # ... the dotted name means the module
    assert resolve("medvlp_lib.methods.msd.msd_loss").__name__ == "msd_loss"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        resolve("medvlp_lib.methods.msd.nope")
    with pytest.raises(TypeError, match="dotted name"):
        resolve(3)


def test_no_notebook_cuts_docstrings_by_hand():
    """The ad-hoc pattern ``getdoc(...).split(...)`` breaks silently when a heading changes: use doc_section."""
    for src in notebook_sources(project_root()):
        text = src.read_text()
        assert not re.search(r"getdoc\([^)]*\)[^\n]*\.split\(|\bdoc\.split\(", text), src.stem
