"""Schematic diagrams of the book's methods, drawn with matplotlib (boxes and arrows, no data).

One function per method, each returning a :class:`matplotlib.figure.Figure`:

* :func:`clip_diagram` -- the dual encoder and the symmetric InfoNCE loss (chapter 01);
* :func:`msd_diagram` -- momentum self-distillation: online and momentum encoders, key queues, the soft
  target and the two loss terms (chapter 02);
* :func:`rfbe_diagram` -- resource-free batch enlargement: a key pass without gradients, then the query
  branch sub-batch by sub-batch against the full key set (chapter 04);
* :func:`momkd_diagram` -- MoMKD: the slide graph encoder, the class memory updated by momentum, memory-
  guided attention pooling and the omics teacher (chapter 05);
* :func:`vlcd_diagram` -- VLCD: predistillation on natural images, then text-anchored distillation into
  a small student (chapter 06);
* :func:`adaptor_diagram` -- the Adaptor: frozen backbones, the embedding cache and the trained cross-
  attention module (chapter 07).

The colour of a box says what happens to its weights (trained, frozen, momentum copy) or what it is (data,
stored state, loss); solid arrows carry gradients, dashed grey arrows do not (stop-gradient, no-grad passes
and momentum updates). :data:`DIAGRAMS` maps a method name to its function, :func:`draw` draws by name.
The labels use the symbols of the chapters' equations and the names of the library's modules.
"""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle

__all__ = ["clip_diagram", "msd_diagram", "rfbe_diagram", "momkd_diagram", "vlcd_diagram", "adaptor_diagram",
           "DIAGRAMS", "draw", "STYLES"]

FONT = 11.0  # points; the figures are 10.5 inches wide, so the smallest label (FONT - 1) is >= 9 px in a 700 px column

STYLES = {  # kind -> (face colour, edge colour, line style, legend label)
    "data": ("#f4f4f4", "#555555", "-", "data"),
    "trainable": ("#d5e8f7", "#1f4e79", "-", "trained"),
    "frozen": ("#e3e3e3", "#7a7a7a", "-", "frozen (no gradient)"),
    "momentum": ("#eaf3fb", "#3a78b5", "--", "momentum copy (EMA, no gradient)"),
    "store": ("#fdebd0", "#b9770e", "-", "stored state (queue, memory, cache)"),
    "loss": ("#f9d6d5", "#a93226", "-", "loss"),
    "op": ("#ffffff", "#555555", "-", "operation"),
}
ARROWS = {  # kind -> (colour, line style, width)
    "grad": ("#222222", "-", 1.3),
    "nograd": ("#8a8a8a", "--", 1.2),
    "ema": ("#3a78b5", ":", 1.6),
}


@dataclass
class _Box:
    x: float
    y: float
    w: float
    h: float

    def anchor(self, side: str | None, towards: tuple[float, float]) -> tuple[float, float]:
        """A point on the box edge: on ``side`` ('l', 'r', 't', 'b', optionally with a fraction like 'r0.3'),
        or where the line from the centre towards ``towards`` leaves the box."""
        if side:
            frac = float(side[1:]) if len(side) > 1 else 0.5
            return {"l": (self.x - self.w / 2, self.y - self.h / 2 + frac * self.h),
                    "r": (self.x + self.w / 2, self.y - self.h / 2 + frac * self.h),
                    "t": (self.x - self.w / 2 + frac * self.w, self.y + self.h / 2),
                    "b": (self.x - self.w / 2 + frac * self.w, self.y - self.h / 2)}[side[0]]
        dx, dy = towards[0] - self.x, towards[1] - self.y
        if dx == 0 and dy == 0:
            return self.x, self.y
        t = min(self.w / 2 / abs(dx) if dx else float("inf"), self.h / 2 / abs(dy) if dy else float("inf"))
        return self.x + t * dx, self.y + t * dy


class _Canvas:
    """A fixed coordinate system (``width`` x ``height`` units) with named boxes and arrows between them."""

    def __init__(self, width: float, height: float, figsize: tuple[float, float], title: str | None = None):
        self.fig, self.ax = plt.subplots(figsize=figsize)
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(0, height)
        self.ax.set_aspect("auto")
        self.ax.axis("off")
        if title:
            self.ax.set_title(title, fontsize=FONT + 1.5, loc="left")
        self.boxes: dict[str, _Box] = {}
        self.kinds: set[str] = set()
        self.arrow_kinds: set[str] = set()

    def box(self, key: str, x: float, y: float, text: str, kind: str = "trainable", w: float = 2.0, h: float = 0.8,
            fontsize: float = FONT) -> _Box:
        if kind not in STYLES:
            raise ValueError(f"unknown box kind {kind!r}; choose from {sorted(STYLES)}")
        if key in self.boxes:
            raise ValueError(f"box {key!r} is drawn twice")
        face, edge, ls, _ = STYLES[kind]
        self.ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                         facecolor=face, edgecolor=edge, linestyle=ls, linewidth=1.4, zorder=2))
        self.ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, zorder=3, linespacing=1.25)
        self.boxes[key] = _Box(x, y, w, h)
        self.kinds.add(kind)
        return self.boxes[key]

    def arrow(self, a: str, b: str, text: str | None = None, kind: str = "grad", sides: tuple = (None, None),
              rad: float = 0.0, text_pos: float = 0.5, text_offset: tuple[float, float] = (0.0, 0.12),
              fontsize: float = FONT - 1) -> None:
        if kind not in ARROWS:
            raise ValueError(f"unknown arrow kind {kind!r}; choose from {sorted(ARROWS)}")
        for k in (a, b):
            if k not in self.boxes:
                raise KeyError(f"arrow names box {k!r}, which is not drawn (boxes: {sorted(self.boxes)})")
        ba, bb = self.boxes[a], self.boxes[b]
        start = ba.anchor(sides[0], (bb.x, bb.y))
        end = bb.anchor(sides[1], start if sides[0] else (ba.x, ba.y))
        if sides[0] is None and sides[1] is not None:
            start = ba.anchor(None, end)
        colour, ls, lw = ARROWS[kind]
        self.ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color=colour,
                                          linestyle=ls, linewidth=lw, connectionstyle=f"arc3,rad={rad}",
                                          shrinkA=2, shrinkB=2, zorder=1))
        self.arrow_kinds.add(kind)
        if text:
            tx = start[0] + text_pos * (end[0] - start[0]) + text_offset[0]
            ty = start[1] + text_pos * (end[1] - start[1]) + text_offset[1]
            self.ax.text(tx, ty, text, ha="center", va="bottom", fontsize=fontsize, color=colour, zorder=4,
                         bbox=dict(boxstyle="round,pad=0.1", facecolor="white", edgecolor="none", alpha=0.85))

    def group(self, x0: float, y0: float, x1: float, y1: float, label: str, loc: str = "top") -> None:
        """A dashed frame around a region (a stage, a loop, a branch) with its label."""
        self.ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="#999999", linestyle=(0, (4, 3)),
                                    linewidth=1.0, zorder=0))
        ty = y1 - 0.08 if loc == "top" else y0 + 0.08
        self.ax.text(x0 + 0.1, ty, label, ha="left", va="top" if loc == "top" else "bottom", fontsize=FONT - 0.5,
                     style="italic", color="#555555")

    def note(self, x: float, y: float, text: str, fontsize: float = FONT - 0.5, ha: str = "center", **kw) -> None:
        self.ax.text(x, y, text, ha=ha, va="center", fontsize=fontsize, color="#333333", **kw)

    def finish(self, ncol: int = 3) -> plt.Figure:
        handles = [Patch(facecolor=STYLES[k][0], edgecolor=STYLES[k][1], linestyle=STYLES[k][2], label=STYLES[k][3])
                   for k in STYLES if k in self.kinds and k != "op"]
        names = {"grad": "forward, gradient flows back", "nograd": "no gradient (stop-gradient / no_grad)",
                 "ema": "momentum (EMA) update"}
        handles += [Line2D([], [], color=ARROWS[k][0], linestyle=ARROWS[k][1], linewidth=ARROWS[k][2], label=names[k])
                    for k in ARROWS if k in self.arrow_kinds]
        self.fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=FONT - 1, frameon=False,
                        bbox_to_anchor=(0.5, 0.0))
        self.fig.tight_layout(rect=(0, 0.1, 1, 1))
        return self.fig


def clip_diagram() -> plt.Figure:
    """CLIP (chapter 01): two encoders and heads, a B x B similarity matrix, the symmetric InfoNCE loss."""
    c = _Canvas(12.0, 4.0, (10.5, 3.9), "CLIP: a dual encoder trained with a symmetric InfoNCE loss")
    c.box("x", 1.0, 3.0, "film $x_i$", "data", w=1.5)
    c.box("t", 1.0, 1.0, "report $t_i$", "data", w=1.5)
    c.box("f", 3.3, 3.0, "image encoder $f$\n(ResNet-18)", "trainable", w=2.1, h=0.9)
    c.box("mini", 3.3, 1.0, "text encoder\n(MiniLM)", "frozen", w=2.1, h=0.9)
    c.box("g", 5.8, 3.0, "head $g$ (MLP)\n$u_i$ = normalize", "trainable", w=2.1, h=0.9)
    c.box("h", 5.8, 1.0, "head $h$ (MLP)\n$v_i$ = normalize", "trainable", w=2.1, h=0.9)
    c.box("S", 8.3, 2.0, "similarities\n$S_{ij} = s\\,u_i^\\top v_j$\n(B x B)", "op", w=1.9, h=1.1)
    c.box("scale", 8.3, 3.45, "scale $s = 1/\\tau$", "trainable", w=1.9, h=0.6)
    c.box("loss", 10.7, 2.0, "symmetric InfoNCE\nCE($S$, diag)\n+ CE($S^\\top$, diag)", "loss", w=2.1, h=1.1)
    c.arrow("x", "f")
    c.arrow("t", "mini")
    c.arrow("f", "g")
    c.arrow("mini", "h", "cached", kind="nograd")
    c.arrow("g", "S", "$u_i$")
    c.arrow("h", "S", "$v_i$")
    c.arrow("scale", "S")
    c.arrow("S", "loss")
    c.note(8.3, 0.55, "matched pairs on the diagonal,\nthe other B - 1 are negatives", fontsize=FONT - 1)
    return c.finish()


def msd_diagram() -> plt.Figure:
    """MSD (chapter 02): online and momentum encoders per modality, key queues, soft targets, two loss terms."""
    c = _Canvas(14.4, 6.6, (10.5, 5.2), "MSD: momentum encoders, key queues and a soft cross-modal target")
    c.box("xv", 1.0, 4.9, "two views of\nthe film\n$x$, $x'$", "data", w=1.6, h=1.1)
    c.box("tv", 1.0, 1.7, "two views of\nthe report\n$t$, $t'$", "data", w=1.6, h=1.1)
    c.box("fi", 3.8, 5.8, "online image\nencoder + head", "trainable", w=2.5, h=0.9)
    c.box("mi", 3.8, 4.1, "momentum image\nencoder + head", "momentum", w=2.5, h=0.9)
    c.box("mt", 3.8, 2.5, "momentum text\nencoder + head", "momentum", w=2.5, h=0.9)
    c.box("ft", 3.8, 0.8, "online text\nencoder + head", "trainable", w=2.5, h=0.9)
    c.box("qi", 6.9, 5.8, "image queries $q$", "op", w=2.0, h=0.6)
    c.box("qt", 6.9, 0.8, "report queries $q$", "op", w=2.0, h=0.6)
    c.box("ki", 6.9, 4.1, "image keys $k$\n+ image queue", "store", w=2.0, h=0.9)
    c.box("kt", 6.9, 2.5, "report keys $k$\n+ report queue", "store", w=2.0, h=0.9)
    c.box("unii", 10.3, 5.8, "$L_{uni}$ (image-image)\nInfoNCE", "loss", w=2.9, h=0.8)
    c.box("multi", 10.3, 3.3, "$L_{multi}$ = KL($t\\,\\Vert\\,p_{q2k}$)\n"
          "$t = \\alpha\\,sg(p_{q2k}) + \\beta\\,p_{k2k}$\nsoftmax of $s\\,qK^\\top$ and $s\\,kK^\\top$",
          "loss", w=3.4, h=1.3)
    c.box("unit", 10.3, 0.8, "$L_{uni}$ (report-report)\nInfoNCE", "loss", w=2.9, h=0.8)
    c.box("tot", 13.4, 3.3, "$L$: weighted\nmean of\n$L_{uni}$ and\n$L_{multi}$", "loss", w=1.7, h=1.6)
    c.arrow("xv", "fi", "$x$")
    c.arrow("xv", "mi", "$x'$", kind="nograd")
    c.arrow("tv", "ft", "$t$")
    c.arrow("tv", "mt", "$t'$", kind="nograd")
    c.arrow("fi", "mi", "EMA", kind="ema", sides=("b", "t"), text_offset=(0.45, -0.1))
    c.arrow("ft", "mt", "EMA", kind="ema", sides=("t", "b"), text_offset=(0.45, -0.1))
    c.arrow("fi", "qi")
    c.arrow("ft", "qt")
    c.arrow("mi", "ki", kind="nograd")
    c.arrow("mt", "kt", kind="nograd")
    c.arrow("qi", "unii")
    c.arrow("qt", "unit")
    c.arrow("qi", "multi", sides=("r0.2", "t0.2"))
    c.arrow("qt", "multi", sides=("r0.8", "b0.2"))
    c.arrow("ki", "unii", kind="nograd", sides=("t0.8", "l0.2"))
    c.arrow("kt", "unit", kind="nograd", sides=("b0.8", "l0.8"))
    c.arrow("ki", "multi", kind="nograd", sides=("r0.3", "l0.6"))
    c.arrow("kt", "multi", kind="nograd", sides=("r0.7", "l0.4"))
    for k in ("unii", "multi", "unit"):
        c.arrow(k, "tot", sides=("r", "l"))
    return c.finish()


def rfbe_diagram() -> plt.Figure:
    """RFBE (chapter 04): pass 1 computes every key without gradients, pass 2 back-propagates sub-batch by sub-batch."""
    c = _Canvas(13.0, 5.6, (10.5, 4.8), "RFBE: an effective batch B for the activation memory of one sub-batch")
    c.box("B", 1.1, 2.8, "effective batch\nof B pairs\n= sub-batches\n$S_1, \\dots, S_m$", "data", w=1.9, h=1.6)
    c.group(2.4, 3.3, 8.6, 5.4, "pass 1 (torch.no_grad): keys of all B samples, one sub-batch at a time")
    c.box("mom", 4.0, 4.25, "momentum encoders\n(image, text)", "momentum", w=2.4, h=0.9)
    c.box("K", 7.2, 4.25, "key set $K$:\nB keys + queue", "store", w=2.2, h=0.9)
    c.group(2.4, 0.25, 8.6, 3.0, "pass 2, for $s = 1..m$: query branch of $S_s$ only", loc="bottom")
    c.box("on", 4.0, 1.9, "online encoders\non $S_s$", "trainable", w=2.4, h=0.9)
    c.box("ls", 7.2, 1.9, "loss of $S_s$'s\nqueries vs full $K$", "loss", w=2.2, h=0.9)
    c.box("acc", 10.6, 1.9, "backward now:\n.grad += $\\frac{|S_s|}{B}\\nabla L_{S_s}$\nfree $S_s$'s activations",
          "op", w=2.9, h=1.2)
    c.box("step", 10.6, 4.25, "after all $m$ sub-batches:\none optimiser step,\none EMA update, one enqueue",
          "op", w=2.9, h=1.2)
    c.arrow("B", "mom", kind="nograd", sides=("r0.8", "l"))
    c.arrow("mom", "K", kind="nograd")
    c.arrow("B", "on", sides=("r0.2", "l"))
    c.arrow("on", "ls", "queries $q$")
    c.arrow("K", "ls", "no gradient", kind="nograd", text_offset=(0.55, 0.0))
    c.arrow("ls", "acc")
    c.arrow("acc", "step", "loop over $s$", sides=("t", "b"), text_offset=(0.75, -0.1))
    return c.finish()


def momkd_diagram() -> plt.Figure:
    """MoMKD (chapter 05): slide graph encoder, momentum class memory, memory-guided pooling, omics teacher."""
    c = _Canvas(14.0, 7.0, (10.5, 5.6), "MoMKD: genomics and the slide meet in a class memory, never directly")
    c.group(0.2, 4.0, 13.8, 6.98, "slide branch (training and inference)")
    c.box("patch", 1.3, 5.9, "patch features\n+ coordinates", "data", w=2.0, h=0.9)
    c.box("gat", 4.0, 5.9, "k-NN graph +\nGATv2 encoder\n$H = [h_i]$", "trainable", w=2.2, h=1.1)
    c.box("pp", 4.0, 4.6, "patch projection\n$p_i$ (unit)", "trainable", w=2.2, h=0.8)
    c.box("pool", 8.0, 5.75, "memory-guided pooling\nscore$_i$ = max cos($p_i$, $C^+$) - max cos($p_i$, $C^-$)\n"
          "$a$ = softmax(score$/\\tau$),  $v = \\Sigma_i\\, a_i h_i$", "op", w=5.0, h=1.2)
    c.box("cls", 12.4, 5.9, "classifier\n$0.5\\,$CE", "loss", w=1.8, h=0.9)
    c.box("w", 12.3, 4.6, "pool projection $w$\n$0.2\\,L_{align}(w)$", "loss", w=2.4, h=0.9)
    c.box("mem", 7.4, 3.35, "class memory\n$C^+$, $C^-$ ($n$ slots each)", "store", w=3.0, h=0.9)
    c.group(0.2, 0.2, 13.8, 2.65, "omics branch (training only)", loc="bottom")
    c.box("om", 1.3, 1.5, "omics vector $o$", "data", w=2.0, h=0.8)
    c.box("enc", 4.0, 1.5, "omics encoder\n$z$ = Enc($o$)", "trainable", w=2.2, h=0.9)
    c.box("u", 7.4, 1.5, "omics projection $u$\n$0.05\\,L_{align}(u)$", "loss", w=2.8, h=0.9)
    c.box("dec", 10.7, 1.5, "decoder $\\hat o$\n$0.01\\,$MSE($\\hat o$, $o$)", "loss", w=2.6, h=0.9)
    c.arrow("patch", "gat")
    c.arrow("gat", "pp")
    c.arrow("gat", "pool", "$h_i$", sides=("r", "l"))
    c.arrow("pp", "pool", "$p_i$", sides=("r", "b0.15"))
    c.arrow("pool", "cls", "$v$")
    c.arrow("pool", "w", sides=("r0.2", "l"))
    c.arrow("mem", "pool", "detached", kind="nograd", sides=("t0.6", "b0.6"), text_offset=(0.55, -0.25))
    c.arrow("pp", "mem", "$0.1\\,L_{mem}$ (VQ)", sides=("b", "l0.7"), text_pos=0.4, text_offset=(-0.2, -0.45))
    c.arrow("om", "enc")
    c.arrow("enc", "u")
    c.arrow("enc", "dec", sides=("b0.3", "b0.3"), rad=0.25)
    c.arrow("w", "mem", "momentum update", kind="ema", sides=("b0.3", "r0.7"), text_pos=0.5, text_offset=(0.3, -0.4))
    c.arrow("u", "mem", "momentum update", kind="ema", sides=("t0.5", "b0.5"), text_offset=(0.95, -0.2))
    return c.finish()


def vlcd_diagram() -> plt.Figure:
    """VLCD (chapter 06): predistillation on natural images, then text-anchored distillation on image-report pairs."""
    c = _Canvas(14.0, 6.2, (10.5, 5.0), "VLCD: a small student learns the teacher's space, anchored on the report")
    c.group(0.2, 0.2, 4.6, 6.0, "stage 1: predistillation\n(unlabelled natural images)")
    c.box("nat", 2.4, 4.6, "natural-image crop", "data", w=2.6, h=0.7)
    c.box("s1", 1.35, 3.2, "student", "trainable", w=1.7, h=0.7)
    c.box("t1", 3.45, 3.2, "teacher\nimage tower", "frozen", w=1.7, h=0.9)
    c.box("P", 1.35, 1.9, "projector $P$", "trainable", w=1.7, h=0.7)
    c.box("lpre", 2.4, 0.8, "$L_{pre} = 1 - \\cos(P(s), t)$", "loss", w=3.6, h=0.7)
    c.arrow("nat", "s1")
    c.arrow("nat", "t1", kind="nograd")
    c.arrow("s1", "P")
    c.arrow("P", "lpre")
    c.arrow("t1", "lpre", kind="nograd")
    c.group(5.0, 0.2, 13.8, 6.0, "stage 2: distillation on film-report pairs (the student starts from stage 1)")
    c.box("rep", 6.2, 5.0, "report", "data", w=1.5, h=0.7)
    c.box("film", 6.2, 2.5, "film $x_i$", "data", w=1.5, h=0.7)
    c.box("tt", 8.75, 5.0, "teacher text tower\n$v_i$", "frozen", w=2.95, h=0.9)
    c.box("st", 8.75, 3.3, "student (MobileNetV3, ...)\n$s_i$, unnormalised", "trainable", w=2.95, h=0.9)
    c.box("te", 8.75, 1.4, "teacher image tower\n(ResNet-50) $t_i$", "frozen", w=2.95, h=0.9)
    c.box("lt", 12.3, 5.0, "$L_t$: CLIP loss,\n$s_i$ normalised vs $v$", "loss", w=2.6, h=0.9)
    c.box("lgnd", 12.3, 3.3, "$\\lambda\\,L_{gnd}$: $s_i$ along $v_i$,\nnorm floor $\\Vert t_i\\Vert$",
          "loss", w=2.6, h=0.9)
    c.box("ldist", 12.3, 1.4, "$\\mu\\,L_{dist} = 1 - \\cos(s_i, t_i)$\n(default $\\mu$ = 0)", "loss", w=2.6, h=0.9)
    c.arrow("rep", "tt", kind="nograd")
    c.arrow("film", "st")
    c.arrow("film", "te", kind="nograd")
    c.arrow("tt", "lt", kind="nograd")
    c.arrow("st", "lgnd")
    c.arrow("te", "ldist", kind="nograd")
    c.arrow("st", "lt", sides=("r0.8", "l0.2"))
    c.arrow("st", "ldist", sides=("r0.2", "l0.8"))
    c.arrow("tt", "lgnd", "anchor", kind="nograd", sides=("r0.2", "l0.8"), text_pos=0.3, text_offset=(0.0, 0.0))
    c.arrow("te", "lgnd", "floor", kind="nograd", sides=("r0.8", "l0.2"), text_pos=0.3, text_offset=(0.0, -0.3))
    return c.finish()


def adaptor_diagram() -> plt.Figure:
    """The Adaptor (chapter 07): frozen backbones, cached token embeddings, a trained cross-attention module."""
    c = _Canvas(14.0, 5.0, (10.5, 4.3), "Adaptor: frozen backbones, cached tokens, a small trained fusion module")
    c.box("x", 1.0, 3.6, "film", "data", w=1.3, h=0.7)
    c.box("t", 1.0, 1.2, "report", "data", w=1.3, h=0.7)
    c.box("fi", 3.1, 3.6, "image backbone\n(SimCLR ResNet-18)", "frozen", w=2.4, h=0.9)
    c.box("ft", 3.1, 1.2, "text backbone\n(MiniLM)", "frozen", w=2.4, h=0.9)
    c.box("cache", 5.95, 2.4, "embedding cache\nimage tokens $V$\ntext tokens $T$, mask $m$", "store", w=2.8, h=1.3)
    c.group(7.45, 0.35, 11.0, 4.65, "Adaptor (the only trained part)")
    c.box("proj", 9.2, 3.85, "projections $W_v$, $W_t$\n+ image [CLS]", "trainable", w=3.1, h=0.8)
    c.box("xattn", 9.2, 2.4, "2 x cross-attention:\n$V$ attends to $T$,\nthen $T$ to the new $V$", "trainable",
          w=3.1, h=1.1)
    c.box("pool", 9.2, 1.0, "first token, projection,\nnormalise: $z_v$, $z_t$", "trainable", w=3.1, h=0.8)
    c.box("loss", 12.5, 2.4, "$w_{img}$ CE($S$, I)\n+ $w_{txt}$ CE($S^\\top$, I)\n$S = s\\,z_v z_t^\\top$",
          "loss", w=2.3, h=1.2)
    c.arrow("x", "fi", kind="nograd")
    c.arrow("t", "ft", kind="nograd")
    c.arrow("fi", "cache", "once", kind="nograd", sides=("r", "l0.7"))
    c.arrow("ft", "cache", "once", kind="nograd", sides=("r", "l0.3"))
    c.arrow("cache", "xattn", kind="nograd", sides=("r", "l"))
    c.note(6.0, 1.3, "read every epoch")
    c.arrow("cache", "proj", kind="nograd", sides=("r0.8", "l"))
    c.arrow("proj", "xattn")
    c.arrow("xattn", "pool")
    c.arrow("pool", "loss", sides=("r", "l0.3"))
    return c.finish()


DIAGRAMS = {"clip": clip_diagram, "msd": msd_diagram, "rfbe": rfbe_diagram, "momkd": momkd_diagram,
            "vlcd": vlcd_diagram, "adaptor": adaptor_diagram}


def draw(name: str) -> plt.Figure:
    """The diagram of a method by name (``DIAGRAMS``' keys); an unknown name is an error that lists them."""
    if name not in DIAGRAMS:
        raise KeyError(f"no diagram named {name!r}; available: {sorted(DIAGRAMS)}")
    return DIAGRAMS[name]()
