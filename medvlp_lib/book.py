"""What a chapter needs from the book around it: ``glue``, the notebook setup, legible figures, the ledger table.

Every chapter's hidden setup cell ends with ``setup_notebook()`` and imports ``glue`` from here, so the
same notebook reads well in three places:

* **the book build** (``python -m medvlp_lib.notebooks execute`` sets ``MEDVLP_BOOK_BUILD=1`` for its
  kernels): ``glue`` is MyST-NB's, and the prose's ``{glue:text}`` roles paste the values;
* **Jupyter or Colab**: MyST-NB may be missing and nothing pastes glued values, so ``glue`` *shows*
  each value as one line ``name = value`` under the cell that computed it (the paired ``.ipynb`` carries the
  book's numbers in its prose already; these lines are the values of the run in front of the reader);
* **everywhere**: ``setup_notebook`` applies one matplotlib style and silences a short list of
  third-party warnings that say nothing about the chapter (each named below with its source), and every
  figure is drawn by ``figure_png``, which enlarges a figure's text where the book's column would shrink
  it below ``MIN_FONT_PX`` and stamps the PNG with the numbers the browser check re-measures.
"""
from __future__ import annotations

import html
import os
import warnings

from .viz.plots import VERDICT_COLOURS

__all__ = ["glue", "building_book", "setup_notebook", "figure_png", "min_font_pt", "legible_scale", "drawn_width_in",
           "verdict_table_html", "chapter_claims_html", "collapsed", "COLUMN_PX", "MIN_FONT_PX", "VERDICT_COLOURS"]

#: set (to "1") by the book's runner for the kernels it starts
BOOK_ENV = "MEDVLP_BOOK_BUILD"
#: width in CSS px a figure may take in the book at a 1280 px window: sphinx-book-theme's text column is
#: 688 px (``tools/browser_check.py`` reports it per page and fails on any figure whose text then shows too small)
COLUMN_PX = 680
#: smallest font a figure may show at its displayed size, in CSS px
MIN_FONT_PX = 9.0
#: largest factor ``figure_png`` enlarges a figure's text by
MAX_TEXT_SCALE = 2.5


#: third-party warnings that carry no information for a reader of the book: (message regex, category, source)
QUIET_WARNINGS = (
    (r".*torch\.jit\.(script|trace).*", FutureWarning, "torch>=2.9 deprecates TorchScript; timm/torchxrayvision"),
    (r".*`torch\.jit\.script` is deprecated.*", DeprecationWarning, "torch>=2.9 (TorchScript deprecation)"),
    (r"IProgress not found.*", Warning, "tqdm.auto without ipywidgets"),
    (r".*n_jobs value .* overridden to 1 by setting random_state.*", UserWarning, "umap-learn with a fixed seed"),
    (r".*'force_all_finite' was renamed to 'ensure_all_finite'.*", FutureWarning, "umap-learn on scikit-learn>=1.6"),
)


def building_book() -> bool:
    """True inside a kernel that the book's runner started (its outputs become the book's pages)."""
    return os.environ.get(BOOK_ENV) == "1"


def glue(name: str, value, display: bool = True) -> None:
    """Store ``value`` under ``name`` for the prose (``{glue:text}`name```); see the module docstring.

    In the book build this is ``myst_nb.glue``. Elsewhere ``display=True`` displays the value as usual and
    ``display=False`` shows one line ``name = value`` (the value MyST-NB would paste).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"glue name must be a non-empty string, got {name!r}")
    if building_book():
        from myst_nb import glue as myst_glue
        myst_glue(name, value, display=display)
        return
    from IPython.display import display as ipy_display
    if display:
        ipy_display(value)
    else:
        ipy_display({"text/plain": f"{name} = {_plain(value)}"}, raw=True)


def _plain(value) -> str:
    if isinstance(value, str):
        return value
    try:
        from IPython.core.formatters import format_display_data
        return format_display_data(value)[0].get("text/plain", repr(value))
    except Exception:  # outside IPython
        return repr(value)


# ---------------------------------------------------------------------------------------------------------
# figures
def min_font_pt(fig) -> float | None:
    """The smallest font size (pt) of any visible, non-empty text in ``fig``; ``None`` if it has none."""
    from matplotlib.text import Text
    sizes = [t.get_fontsize() for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and _in_figure(t)]
    return min(sizes) if sizes else None


def _in_figure(text) -> bool:
    axes = text.axes
    return axes is None or axes.get_visible()


def drawn_width_in(fig) -> float:
    """Width in inches of the PNG ``figure_png`` makes: the tight bounding box plus its padding."""
    import matplotlib
    fig.draw_without_rendering()  # runs the layout engine, so the box is the one that will be drawn
    tight = fig.get_tightbbox(fig.canvas.get_renderer())
    return tight.width + 2 * matplotlib.rcParams["savefig.pad_inches"]


def legible_scale(fig, column_px: float = COLUMN_PX, min_px: float = MIN_FONT_PX) -> float:
    """Factor by which ``fig``'s text must grow so its smallest font shows at ``min_px`` in the column.

    A PNG ``w`` inches wide (``drawn_width_in``) at ``dpi`` is ``w * dpi`` px and shown at
    ``min(1, column_px / (w * dpi))`` of that, so a ``f`` pt font shows at ``f * dpi / 72 * scale`` px.
    Returns 1.0 when it is legible already, at most ``MAX_TEXT_SCALE``.
    """
    smallest = min_font_pt(fig)
    if smallest is None:
        return 1.0
    width_px = drawn_width_in(fig) * fig.dpi
    shown_px = smallest * fig.dpi / 72 * min(1.0, column_px / width_px)
    return max(1.0, min(MAX_TEXT_SCALE, min_px / shown_px))


def _scale_text(fig, k: float) -> None:
    from matplotlib.text import Text
    tick_labels = set()
    for ax in fig.axes:
        for axis, name in ((ax.xaxis, "x"), (ax.yaxis, "y")):
            for which, ticks in (("major", axis.get_major_ticks()), ("minor", axis.get_minor_ticks())):
                if ticks:
                    tick_labels.update(id(t) for tk in ticks for t in (tk.label1, tk.label2))
                    ax.tick_params(axis=name, which=which, labelsize=ticks[0].label1.get_fontsize() * k)
    for t in fig.findobj(Text):
        if id(t) not in tick_labels and t.get_text().strip():
            t.set_fontsize(t.get_fontsize() * k)
    if fig.get_layout_engine() is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fig.tight_layout()
            except Exception:  # a layout tight_layout cannot handle keeps its own; bbox 'tight' still frames it
                pass


def figure_png(fig):
    """PNG bytes of ``fig`` for display, its text enlarged by ``legible_scale`` first.

    The PNG carries text chunks ``medvlp-min-font-pt`` (after scaling) and ``medvlp-dpi``, from which the
    browser check computes the smallest font each figure shows in the rendered page.
    """
    from IPython.core.pylabtools import print_figure
    total = 1.0
    for _ in range(4):  # larger text widens the tight box a little, so check again
        k = min(legible_scale(fig), MAX_TEXT_SCALE / total)
        if k <= 1.005:
            break
        _scale_text(fig, k)
        total *= k
    smallest = min_font_pt(fig)
    meta = {"medvlp-dpi": f"{fig.dpi:.1f}"}
    if smallest is not None:
        meta["medvlp-min-font-pt"] = f"{smallest:.2f}"
    return print_figure(fig, "png", bbox_inches="tight", metadata=meta)


def setup_notebook() -> None:
    """One style for every chapter: legible figures, no warnings that say nothing about the chapter."""
    for pattern, category, _source in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    import matplotlib
    matplotlib.rcParams.update({
        "figure.dpi": 100, "savefig.dpi": 100, "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10,
        "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 9, "figure.titlesize": 11,
        "axes.spines.top": False, "axes.spines.right": False,
    })
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None or not hasattr(ip, "display_formatter"):
        return
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    # the inline backend registers its own PNG formatter when the first figure loads it: load it now, then
    # replace that formatter (a figure made and closed here is never shown)
    plt.close(plt.figure())
    ip.display_formatter.formatters["image/png"].for_type(Figure, figure_png)


# ---------------------------------------------------------------------------------------------------------
# the claims ledger
def verdict_table_html(frame, columns=("claim", "paper's number", "ours"), verdict="verdict",
                       detail="explanation", group="paper", chapter="chapter", gpu=True) -> str:
    """The ledger as one HTML table that reads at 1280 px: a narrow coloured verdict column, the claim,
    both numbers, the gpu verdict next to them (``gpu``, when the frame has ``gpu verdict``), and the
    explanation in a toggle on the row below (with the gpu explanation or the command that would produce it).

    ``frame`` is ``medvlp_lib.ledger.ledger_frame()`` (any frame with those columns). Rows are grouped
    under a heading row per ``group`` value.
    """
    gpu = gpu and "gpu verdict" in frame.columns
    if gpu:   # a narrow column with the gpu verdict; its numbers and command go into the row's toggle
        frame = frame.copy()
        ours = frame["gpu ours"] if "gpu ours" in frame.columns else ["—"] * len(frame)
        why = frame["gpu explanation"] if "gpu explanation" in frame.columns else [""] * len(frame)
        frame["gpu"] = ["not run" if str(v) == "no gpu result yet" else str(v) for v in frame["gpu verdict"]]
        frame[detail] = [str(d) + (f" — at the papers' scale: {o}; {g}" if o not in ("—", "", None) else
                                   f" — at the papers' scale: {g}" if str(g).strip() else "")
                         for d, o, g in zip(frame[detail], ours, why)]
    missing = [c for c in (*columns, verdict, detail, group) if c not in frame.columns]
    if missing:
        raise KeyError(f"verdict_table_html: frame lacks columns {missing}; it has {list(frame.columns)}")
    esc = html.escape
    ncol = len(columns) + 1 + int(gpu)
    order = {g: i for i, g in enumerate(dict.fromkeys(frame[group]))}
    frame = frame.iloc[sorted(range(len(frame)), key=lambda i: order[frame[group].iloc[i]])]
    out = ['<table class="medvlp-ledger">', "<colgroup>",
           '<col class="medvlp-verdict-col">', *['<col>' for _ in columns],
           *(['<col class="medvlp-gpu-col">'] if gpu else []), "</colgroup>",
           "<thead><tr><th>verdict</th>", *[f"<th>{esc(str(c))}</th>" for c in columns],
           *(["<th>gpu</th>"] if gpu else []), "</tr></thead>",
           "<tbody>"]
    last_group = None
    for ident, row in frame.iterrows():
        if row[group] != last_group:
            last_group = row[group]
            out.append(f'<tr class="medvlp-group"><th colspan="{ncol}">{esc(str(last_group))}</th></tr>')
        v = str(row[verdict])
        colour = VERDICT_COLOURS.get(v, "#5c636a")
        where = f" · chapter {esc(str(row[chapter]))}" if chapter in frame.columns and str(row[chapter]) else ""
        cells = "".join(f"<td>{esc(str(row[c]))}</td>" for c in columns)
        if gpu:
            g = str(row["gpu"])
            cells += (f'<td class="medvlp-gpu">{esc(g)}</td>' if g == "not run" else
                      f'<td class="medvlp-verdict" style="background:{VERDICT_COLOURS.get(g, "#5c636a")};color:#fff">'
                      f"{esc(g)}</td>")
        out.append(f'<tr class="medvlp-claim"><td class="medvlp-verdict" style="background:{colour};color:#fff">'
                   f"{esc(v)}</td>{cells}</tr>")
        text = str(row[detail]).strip()
        if text:
            out.append(f'<tr class="medvlp-detail"><td></td><td colspan="{ncol - 1}"><details><summary>why'
                       f"{esc(where)} <code>{esc(str(ident))}</code></summary>{esc(text)}</details></td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def chapter_claims_html(chapter: str, frame=None) -> str:
    """The ledger rows of one chapter (``"02"``) as :func:`verdict_table_html`: the cpu verdict and numbers, the gpu
    verdict beside them, and in each toggle the explanation and the command that reproduces the claim at the
    papers' scale."""
    if frame is None:
        from .ledger import ledger_frame
        frame = ledger_frame()
    rows = frame[frame["chapter"] == chapter]
    if rows.empty:
        raise KeyError(f"the ledger has no claims for chapter {chapter!r}; chapters: {sorted(set(frame['chapter']))}")
    return verdict_table_html(rows)


def collapsed(summary: str, *parts):
    """An HTML ``<details>`` block, closed: ``summary`` shown, ``parts`` (data frames, text) inside.

    For material a page should offer without showing, e.g. the benchmark tables under the ledger.
    """
    from IPython.display import HTML
    body = []
    for part in parts:
        if hasattr(part, "to_html"):
            body.append(part.to_html(border=0, index=False, na_rep=""))
        else:
            body.append(f"<pre>{html.escape(str(part))}</pre>")
    return HTML(f'<details class="medvlp-collapsed"><summary>{html.escape(summary)}</summary>'
                f'<div style="overflow-x:auto">{"".join(body)}</div></details>')
