"""The teacher kit: a worked solution for every exercise, a glossary the chapters link to, the course page, and
one diagram and one shown loss source per method chapter."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medvlp_lib.notebooks import notebook_sources
from medvlp_lib.utils import project_root

ROOT = project_root()
CHAPTERS = [p for p in notebook_sources(ROOT) if re.match(r"0[1-8]_", p.stem)]
METHOD_CHAPTERS = {"01": "clip", "02": "msd", "04": "rfbe", "05": "momkd", "06": "vlcd", "07": "adaptor"}


def _cells(src: Path):
    import jupytext
    return jupytext.read(src).cells


def _glossary_terms() -> set[str]:
    text = (ROOT / "book" / "glossary.md").read_text()
    block = re.search(r"```\{glossary\}\n(.*?)\n```", text, re.S)
    assert block, "book/glossary.md needs a {glossary} directive"
    return {line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith(" ")}


def _term_targets(text: str) -> list[str]:
    out = []
    for m in re.finditer(r"\{term\}`([^`]+)`", text):
        inner = m.group(1)
        target = re.search(r"<([^>]+)>\s*$", inner)
        out.append((target.group(1) if target else inner).strip())
    return out


@pytest.mark.parametrize("src", CHAPTERS, ids=lambda p: p.stem)
def test_every_exercise_has_a_worked_solution(src):
    md = "\n\n".join(c.source for c in _cells(src) if c.cell_type == "markdown")
    section = md[md.index("## Exercises"):]
    exercises = [int(n) for n in re.findall(r"^\*\*Exercise (\d+)\.\*\*", section, re.M)]
    assert exercises == list(range(1, len(exercises) + 1)) and exercises, f"{src.stem}: exercises {exercises}"
    solutions = re.findall(r"^:::\{dropdown\} Solution to exercise (\d+)\n(.*?)^:::$", section, re.M | re.S)
    assert [int(n) for n, _ in solutions] == exercises, f"{src.stem}: one dropdown per exercise, in order"
    for n, body in solutions:
        assert len(body.split()) >= 40, f"{src.stem}: the solution to exercise {n} is too short to be worked"


@pytest.mark.parametrize("src", CHAPTERS, ids=lambda p: p.stem)
def test_solution_code_cells_are_hidden_and_labelled(src):
    cells = _cells(src)
    code = [c for c in cells if c.cell_type == "code" and c.source.lstrip().startswith("# Solution to exercise")]
    for c in code:
        assert "hide-cell" in c.metadata.get("tags", []), f"{src.stem}: {c.source.splitlines()[0]} must be hidden"
    md = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    for c in code:  # a solution's code is announced by its dropdown
        n = re.match(r"# Solution to exercise (\d+)", c.source.lstrip()).group(1)
        assert f"Solution to exercise {n}" in md, src.stem


def test_about_forty_exercises_all_solved():
    total = 0
    for src in CHAPTERS:
        md = "\n".join(c.source for c in _cells(src) if c.cell_type == "markdown")
        total += len(re.findall(r"^:::\{dropdown\} Solution to exercise \d+", md, re.M))
    assert total >= 40, total


def test_glossary_terms_used_by_the_book_exist():
    terms = {t.lower() for t in _glossary_terms()}
    assert len(terms) >= 40
    pages = [s.read_text() for s in CHAPTERS] + [(ROOT / "book" / "course.md").read_text()]
    used = [t for text in pages for t in _term_targets(text)]
    missing = sorted({t for t in used if t.lower() not in terms})
    assert not missing, f"{{term}} roles without a glossary entry: {missing}"
    for src in CHAPTERS:  # every chapter links its terms to the glossary
        assert "{term}`" in src.read_text(), f"{src.stem} links no glossary term"


def test_course_and_glossary_are_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    assert "file: book/course" in toc and "file: book/glossary" in toc


@pytest.mark.parametrize("chapter,name", sorted(METHOD_CHAPTERS.items()))
def test_method_chapters_show_a_diagram_near_the_top_and_the_source_of_their_loss(chapter, name):
    src = next(p for p in CHAPTERS if p.stem.startswith(chapter))
    code = [c.source for c in _cells(src) if c.cell_type == "code"]
    first = next(i for i, c in enumerate(code) if f"{name}_diagram()" in c)
    assert first <= 3, f"{src.stem}: the {name} diagram should come right after the set-up cells (cell {first})"
    assert any("show_source(" in c for c in code), f"{src.stem} shows no loss source"


def _course_table() -> dict[str, dict]:
    text = (ROOT / "book" / "course.md").read_text()
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*\{doc\}`(\d\d)[^|]*\|([^|]*)\|([^|]*)\|([^|]*)\|([^|]*)\|", line)
        if m:
            rows[m.group(1)] = {"cpu_min": m.group(4).strip(), "files": re.findall(r"`([\w]+)`", m.group(5))}
    return rows


def test_course_page_cpu_times_are_the_results_files_wall_times():
    from medvlp_lib.notebooks import course_page_text
    assert (ROOT / "book" / "course.md").read_text() == course_page_text(ROOT), "run `make sync`"
    rows = _course_table()
    assert set(rows) == {f"0{i}" for i in range(1, 9)} | {"10"}, sorted(rows)
    for chapter, row in rows.items():
        stated = row["cpu_min"]
        if not row["files"]:
            assert stated in ("—", "-", "0"), (chapter, stated)
            continue
        paths = [ROOT / "results" / f"{f}.json" for f in row["files"]]
        if not all(p.is_file() for p in paths):
            assert stated.startswith("not all run yet"), (chapter, stated)
            continue
        seconds = sum(json.loads(p.read_text())["wall_time_s"] for p in paths)
        assert abs(float(stated) - seconds / 60) <= 0.5, f"chapter {chapter}: {stated} min vs {seconds / 60:.1f}"
