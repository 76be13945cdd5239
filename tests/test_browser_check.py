"""tools/browser_check.py: each kind of failure is found on a small constructed page, and a clean page passes."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from tools import browser_check as bc

pytestmark = pytest.mark.skipif(bc.find_chromium() is None,
                                reason="needs Debian's chromium (.ci/run installs it with apt-get)")

ARTICLE = '<article class="bd-article" style="width:600px">{}</article>'


def _png(path: Path, width: int, height: int, text: dict | None = None):
    """A grey PNG of the given size, with tEXt chunks."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + b"\x80" * width for _ in range(height))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    for k, v in (text or {}).items():
        data += chunk(b"tEXt", k.encode() + b"\0" + v.encode())
    data += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(data)


def _site(tmp_path: Path, body: str) -> Path:
    html = tmp_path / "html"
    html.mkdir()
    (html / "index.html").write_text(f"<html><body>{ARTICLE.format(body)}</body></html>")
    (html / "other.html").write_text('<html><body><h1 id="there">other</h1></body></html>')
    return html


def _kinds(reports) -> set[str]:
    return {kind for r in reports for kind, _ in r["problems"]}


def test_a_clean_page_passes_and_gets_a_screenshot(tmp_path):
    html = _site(tmp_path, '<p>Fine prose with a <a href="other.html#there">link</a>.</p>'
                           '<div class="cell_output"><img src="fig.png"></div>')
    _png(html / "fig.png", 300, 100, {"medvlp-min-font-pt": "10", "medvlp-dpi": "100"})
    reports = bc.run(html, tmp_path / "shots", pages=["index.html"])
    assert reports[0]["problems"] == []
    assert (tmp_path / "shots" / "index.png").stat().st_size > 1000


def test_every_kind_of_problem_is_found(tmp_path):
    long_output = "\n".join(f"line {i}" for i in range(bc.MAX_OUTPUT_LINES + 5))
    html = _site(tmp_path, "".join([
        '<p>missing: <img src="nope.png"></p>',
        '<p><a href="gone.html">a dead link</a> and <a href="other.html#nowhere">a dead anchor</a></p>',
        "<p>The ledger tracks {glue:text}`n_claims` claims, see {cite}`pham2025msd`.</p>",
        "<p>```{note} left as text</p>",
        "<p>as shown in Figure ??</p>",
        '<div class="cell_output"><div class="output traceback"><pre>Traceback: boom</pre></div></div>',
        f'<div class="cell_output"><pre>{long_output}</pre></div>',
        '<p style="width:900px">a paragraph wider than its column</p>',
        '<div class="cell_output"><img src="small.png" style="width:200px"></div>',
        '<script src="https://cdn.example.invalid/mathjax.js"></script>',
    ]))
    # 8 pt at 100 dpi is 11.1 px in the image; shown at 200 of 800 px it is 2.8 px
    _png(html / "small.png", 800, 100, {"medvlp-min-font-pt": "8", "medvlp-dpi": "100"})
    reports = bc.run(html, None, pages=["index.html"])
    kinds = _kinds(reports)
    for kind in ("missing image", "broken link", "unrendered role", "unrendered directive",
                 "unresolved reference (??)", "error output", "output block too long",
                 "prose wider than the column", "figure text too small", "request leaves the machine"):
        assert kind in kinds, f"{kind!r} not detected; found {sorted(kinds)}"
    details = " ".join(d for r in reports for _, d in r["problems"])
    assert "gone.html" in details and "#nowhere" in details and "{glue:text}`n_claims`" in details


def test_png_text_reads_what_figure_png_writes(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from PIL import Image

    from medvlp_lib.book import COLUMN_PX, MIN_FONT_PX, figure_png
    fig, ax = plt.subplots(figsize=(14, 3))
    ax.set_title("a wide figure", fontsize=7)
    (tmp_path / "f.png").write_bytes(figure_png(fig))
    plt.close(fig)
    meta = bc.png_text(tmp_path / "f.png")
    width = Image.open(tmp_path / "f.png").size[0]
    # a 14 in figure shows at well under half its size: 7 pt text would land near 4 px, so it was enlarged
    shown = float(meta["medvlp-min-font-pt"]) * float(meta["medvlp-dpi"]) / 72 * min(1, COLUMN_PX / width)
    assert shown >= MIN_FONT_PX - 0.05 and bc.MIN_FONT_PX == MIN_FONT_PX
