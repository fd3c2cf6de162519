"""The page's architecture drawing: every layer's output volume, and the branches of a graph.

A chain is one row of volumes (height from H, the oblique edge from W, the thickness from D, all
on a log scale so that 224 and 7 both fit), each labelled with the layer's name, kind and K, F,
S, P, its shape underneath.

A branching network (:class:`~convnet.net.graph.Graph` with RES/CAT blocks) is drawn from the
block tree the page's data carries (``data["structure"]``, see :func:`convnet.viz.page.build_data`):
each block is a framed box whose branches are parallel *lanes*, one under the other, that fork
from the block's input and meet in the merge (a circled + for ADD, a circled stack for CAT)
followed by the merge's own volume. The first lane (a RES block's main branch, a CAT's first
branch) stays on the row's axis, so the main path reads straight from left to right; every lane
is headed by what it is (``RES[ main branch``, ``| shortcut: identity``, ``| shortcut:
projection (inserted)``, ``| branch 2 of 4``), written as ``convnet summary`` writes it.

Large graphs stay legible: the row wraps between top-level items past :data:`WRAP_WIDTH`
pixels (a grey line leads from the end of one row to the start of the next), and a graph of more
than :data:`COMPACT_LAYERS` layers is drawn compact: smaller volumes, and a layer that keeps the
shape of the volume before it (BN, the activations, DROPOUT) drawn as a small chip under that
volume instead of a volume of its own. Every layer, chip or volume, is a ``<g class="arch-col"
data-layer="i">`` that the page's script makes clickable.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from convnet.arith import fmt_shape

#: A wider drawing of a graph wraps into rows (pixels; the page's main column is ~1000 wide).
WRAP_WIDTH = 1000.0
#: Graphs with more layers than this are drawn compact (see the module doc).
COMPACT_LAYERS = 40
#: Layers that keep their input's shape, drawn as chips under the volume before them (compact).
FOLDABLE = frozenset({"BN", "RELU", "RELU6", "LRELU", "TANH", "SIGMOID", "DROPOUT"})

_PAD, _GAP, _TOP, _BELOW = 16, 26, 46, 24   # margins, between columns, labels above, shape below
_FORK, _JOIN = 22, 34                        # room for the fork and the merge symbol of a block
_LANE_HEAD, _LANE_GAP, _BOX_PAD = 15, 10, 5  # a lane's title, between lanes, inside a block's box
_ROW_GAP = 34
_CHIP_H = 15


@dataclass
class _Style:
    scale: float = 1.0     # volumes' size (compact drawings use less)
    wires: bool = False    # lines between consecutive volumes (graphs; a chain has none)
    fold: bool = False     # shape-keeping layers as chips (compact drawings)


def _fmt(v: float) -> str:
    return f"{v:.1f}"


class _Col:
    """One layer's volume (or vector bar) with its labels; chips: layers folded under it."""

    def __init__(self, name: str, kind: str, hyper: str, shape: Sequence[int], idx: str,
                 style: _Style, classes: str = "") -> None:
        self.name, self.kind, self.hyper, self.idx = name, kind, hyper, idx
        self.shape = list(shape)
        self.classes = classes
        self.chips: list[tuple[str, str, str, str]] = []   # (name, kind, hyper, idx)
        s = style.scale
        if len(self.shape) == 3:
            self.h = s * _side(self.shape[0])
            self.d = s * _thick(self.shape[2])
            self.o = 0.3 * s * _side(self.shape[1])  # oblique offset: the W axis going back
            self.width = self.d + self.o
            self.vol_h = self.h + self.o
            self.shape_txt = fmt_shape(tuple(self.shape))
        else:
            self.h = s * min(200.0, 20 + 30 * math.log2(max(self.shape[0], 1)))
            self.width = 10.0 * max(s, 0.6)
            self.vol_h = self.h
            self.shape_txt = str(self.shape[0])
        col_w = max(self.width, 7.0 * max(len(self.shape_txt), len(name), len(kind)), 56.0)
        if len(hyper) * 5.6 > col_w:
            col_w = len(hyper) * 5.6
        self.col_w = col_w

    # ----------------------------------------------------------------- measures (see _Seq)
    def measure(self, hv: float) -> tuple[float, float, float, float, float]:
        shift = (self.col_w - self.width) / 2
        down = hv / 2 + _BELOW + (4 + _CHIP_H * len(self.chips) if self.chips else 0)
        return self.col_w, _TOP + hv / 2, down, shift, self.col_w - shift - self.width

    def place(self, x: float, axis: float, hv: float, parts: list[str], style: _Style) -> None:
        """Draw with the column's left edge at ``x`` and the volumes' centre line at ``axis``."""
        top = axis - hv / 2 - _TOP                    # the band's top: the labels hang from it
        if len(self.shape) == 3:
            h, d, o = self.h, self.d, self.o
            y0 = axis - (h + o) / 2 + o
            front = (f"{x:.1f},{y0:.1f} {x + d:.1f},{y0:.1f} {x + d:.1f},{y0 + h:.1f} "
                     f"{x:.1f},{y0 + h:.1f}")
            topf = (f"{x:.1f},{y0:.1f} {x + o:.1f},{y0 - o:.1f} {x + d + o:.1f},{y0 - o:.1f} "
                    f"{x + d:.1f},{y0:.1f}")
            sidef = (f"{x + d:.1f},{y0:.1f} {x + d + o:.1f},{y0 - o:.1f} {x + d + o:.1f},"
                     f"{y0 - o + h:.1f} {x + d:.1f},{y0 + h:.1f}")
            body = (f'<polygon class="vol-top" points="{topf}"/>'
                    f'<polygon class="vol-side" points="{sidef}"/>'
                    f'<polygon class="vol-front" points="{front}"/>')
        else:
            y0 = axis - self.h / 2
            body = (f'<rect class="vol-vec" x="{x:.1f}" y="{y0:.1f}" width="{self.width:g}" '
                    f'height="{self.h:.1f}"/>')
        cx = x + self.width / 2
        name, kind, hyper = (html.escape(t) for t in (self.name, self.kind, self.hyper))
        label = (f'<text class="arch-name" x="{cx:.1f}" y="{top + 14:g}">{name}</text>'
                 f'<text class="arch-kind" x="{cx:.1f}" y="{top + 27:g}">{kind}</text>'
                 f'<text class="arch-hyper" x="{cx:.1f}" y="{top + 39:g}">{hyper}</text>'
                 f'<text class="arch-shape" x="{cx:.1f}" y="{axis + hv / 2 + 14:.1f}">'
                 f'{html.escape(self.shape_txt)}</text>')
        shift = (self.col_w - self.width) / 2
        cls = "arch-col" + (f" {self.classes}" if self.classes else "")
        # the column is centred on the volume: the group is shifted, as the labels are
        parts.append(f'<g transform="translate({shift:.1f},0)" class="{cls}" '
                     f'data-layer="{self.idx}"><title>{name} {kind} {hyper} '
                     f'-&gt; {html.escape(self.shape_txt)}</title>{body}{label}</g>')
        cy = axis + hv / 2 + _BELOW + 4
        for cname, ckind, chyper, cidx in self.chips:
            w = max(40.0, 6.4 * len(cname) + 10)
            cxl = x + shift + self.width / 2 - w / 2
            tip = html.escape(f"{cname} {ckind} {chyper}".strip())
            parts.append(f'<g class="arch-col arch-chip" data-layer="{cidx}"><title>{tip} '
                         f'-&gt; {html.escape(self.shape_txt)}</title>'
                         f'<rect class="chip" x="{cxl:.1f}" y="{cy:.1f}" width="{w:.1f}" '
                         f'height="{_CHIP_H - 2}" rx="3"/><text class="chip-text" '
                         f'x="{cxl + w / 2:.1f}" y="{cy + 10:.1f}">{html.escape(cname)}</text></g>')
            cy += _CHIP_H

    def max_vol(self) -> float:
        return self.vol_h


def _side(v: int) -> float:
    return 14 + 22 * math.log2(max(v, 1))


def _thick(v: int) -> float:
    return 3 + 9 * math.log2(max(v, 1))


@dataclass
class _Seq:
    """Elements one after the other on one axis (a chain, a lane, a row)."""

    items: list[Any] = field(default_factory=list)

    def measure(self, hv: float) -> tuple[float, float, float, float, float]:
        """``(width, up, down, left inset, right inset)``: the extent around the axis, and
        where the volumes start and end inside the box (for the wires)."""
        if not self.items:
            return 0.0, 0.0, 0.0, 0.0, 0.0
        ms = [it.measure(hv) for it in self.items]
        w = sum(m[0] for m in ms) + _GAP * (len(ms) - 1)
        return w, max(m[1] for m in ms), max(m[2] for m in ms), ms[0][3], ms[-1][4]

    def place(self, x: float, axis: float, hv: float, parts: list[str], style: _Style) -> None:
        prev_end = None
        for it in self.items:
            w, _, _, lin, rin = it.measure(hv)
            if style.wires and prev_end is not None:
                parts.append(f'<path class="wire" d="M{prev_end:.1f},{axis:.1f} '
                             f'H{x + lin:.1f}"/>')
            it.place(x, axis, hv, parts, style)
            prev_end = x + w - rin
            x += w + _GAP

    def max_vol(self) -> float:
        return max((it.max_vol() for it in self.items), default=0.0)


@dataclass
class _Block:
    """A RES/CAT block: lanes stacked under the first one, forking and merging."""

    kind: str
    lanes: list[_Seq]
    heads: list[str]
    merge: _Col
    tips: list[str] = field(default_factory=list)

    def _hv(self, i: int, hv: float) -> float:
        """The volumes' band of lane ``i``: the row's for the first (its labels line up with
        the row's), its own tallest volume for the others (a lane of 7x7 maps stays low)."""
        return hv if i == 0 else self.lanes[i].max_vol()

    def _lanes(self, hv: float) -> tuple[list[tuple[float, ...]], list[float], float]:
        ms = [ln.measure(self._hv(i, hv)) for i, ln in enumerate(self.lanes)]
        offs = [0.0]
        for i in range(1, len(ms)):
            up = ms[i][1] if self.lanes[i].items else 4.0
            offs.append(offs[-1] + ms[i - 1][2] + _LANE_GAP + _LANE_HEAD + up)
        # a lane is as wide as its volumes, and at least as its title
        width = max(max(m[0] for m in ms), *(5.8 * len(h) + 8 for h in self.heads))
        return ms, offs, width

    def measure(self, hv: float) -> tuple[float, float, float, float, float]:
        ms, offs, lw = self._lanes(hv)
        mw, mup, mdown, _, mrin = self.merge.measure(hv)
        up = max(_BOX_PAD + _LANE_HEAD + ms[0][1], mup)
        last_down = ms[-1][2] if self.lanes[-1].items else 8.0
        down = max(offs[-1] + last_down + _BOX_PAD, mdown)
        return _FORK + lw + _JOIN + mw, up, down, 0.0, mrin

    def place(self, x: float, axis: float, hv: float, parts: list[str], style: _Style) -> None:
        ms, offs, lw = self._lanes(hv)
        w, up, down, _, _ = self.measure(hv)
        kind = self.kind.lower()
        parts.append(f'<rect class="blk blk-{kind}" x="{x:.1f}" y="{axis - up + 1:.1f}" '
                     f'width="{w:.1f}" height="{up + down - 2:.1f}" rx="7"/>')
        fork_x, lanes_x = x + _FORK / 2, x + _FORK
        join_x = lanes_x + lw + _JOIN / 2
        last = axis + offs[-1]
        parts.append(f'<path class="wire" d="M{x:.1f},{axis:.1f} H{fork_x:.1f} V{last:.1f}"/>')
        tips = self.tips or self.heads
        for i, (ln, m, off, head, tip) in enumerate(zip(self.lanes, ms, offs, self.heads, tips,
                                                        strict=True)):
            ly = axis + off
            top = ly - (m[1] if ln.items else 4.0) - 3
            parts.append(f'<text class="lane-head" x="{lanes_x + 2:.1f}" y="{top:.1f}">'
                         f'<title>{html.escape(tip)}</title>{html.escape(head)}</text>')
            if ln.items:
                parts.append(f'<path class="wire" d="M{fork_x:.1f},{ly:.1f} '
                             f'H{lanes_x + m[3]:.1f}"/>')
                ln.place(lanes_x, ly, self._hv(i, hv), parts, style)
                parts.append(f'<path class="wire" d="M{lanes_x + m[0] - m[4]:.1f},{ly:.1f} '
                             f'H{join_x:.1f}"/>')
            else:  # the identity: the block's input itself, straight to the merge
                parts.append(f'<path class="wire identity" d="M{fork_x:.1f},{ly:.1f} '
                             f'H{join_x:.1f}"/>')
        mx = lanes_x + lw + _JOIN
        _, _, _, mlin, _ = self.merge.measure(hv)
        parts.append(f'<path class="wire" d="M{join_x:.1f},{last:.1f} V{axis:.1f} '
                     f'M{join_x:.1f},{axis:.1f} H{mx + mlin:.1f}"/>')
        r = 7
        if self.kind == "RES":   # a circled +
            sym = (f'M{join_x - 4:.1f},{axis:.1f} H{join_x + 4:.1f} M{join_x:.1f},{axis - 4:.1f} '
                   f'V{axis + 4:.1f}')
        else:                    # a circled stack of slices
            sym = "".join(f'M{join_x + dx:.1f},{axis - 4:.1f} V{axis + 4:.1f} '
                          for dx in (-2.5, 0.0, 2.5))
        parts.append(f'<g class="merge-sym merge-{kind}"><circle cx="{join_x:.1f}" '
                     f'cy="{axis:.1f}" r="{r}"/><path d="{sym}"/></g>')
        self.merge.place(mx, axis, hv, parts, style)

    def max_vol(self) -> float:
        return max(self.merge.max_vol(), *(ln.max_vol() for ln in self.lanes))


def _lane_heads(block: Mapping[str, Any]) -> list[str]:
    """Short lane titles (the drawing has little room); the summary's words are their tooltip."""
    lanes, heads = block["lanes"], []
    for i, lane in enumerate(lanes):
        role = lane["role"]
        if role == "main":
            text = "main branch"
        elif role == "identity":
            text = "shortcut: identity"
        elif role == "shortcut":
            text = "shortcut: projection (inserted)" if lane["projection"] else "shortcut"
        else:
            text = f"branch {i + 1} of {len(lanes)}"
        heads.append(f"{block['kind']}[ {text}" if i == 0 else f"| {text}")
    return heads


def _has_blocks(structure: Sequence[Any] | None) -> bool:
    return bool(structure) and any(isinstance(it, Mapping) for it in structure)  # type: ignore


def architecture_svg(layers: Sequence[Mapping[str, Any]], input_shape: Sequence[int],
                     structure: Sequence[Any] | None = None) -> str:
    """The network drawn as volumes (see the module doc).

    Args:
        layers: the page's layer metas (``name``, ``kind``, ``hyper_text``, ``out_shape``, and
            ``inserted`` for a projection the network inserted).
        input_shape: the network's input ``(H, W, D)``.
        structure: the block tree: a list whose items are layer indices or blocks
            ``{"kind": "RES"|"CAT", "merge": i, "branches": [[...], ...], "lanes": [...]}``
            (an identity shortcut is a last, empty branch; a lane is ``{"role", "projection",
            "text"}``). None or no block: a chain.
    """
    graph = _has_blocks(structure)
    compact = graph and len(layers) > COMPACT_LAYERS
    style = _Style(scale=0.55 if compact else 1.0, wires=graph, fold=compact)

    def col(i: int) -> _Col:
        m = layers[i]
        cls = []
        if m.get("inserted"):
            cls.append("inserted")
        if m["kind"] in ("ADD", "CAT"):
            cls.append("merge")
        return _Col(m["name"], m["kind"], m.get("hyper_text", ""), m["out_shape"], str(i),
                    style, " ".join(cls))

    def seq(items: Sequence[Any]) -> _Seq:
        out: list[Any] = []
        for it in items:
            if isinstance(it, Mapping):
                branches = [seq(b) for b in it["branches"]]
                out.append(_Block(it["kind"], branches, _lane_heads(it), col(it["merge"]),
                                  [lane["text"] for lane in it["lanes"]]))
                continue
            m = layers[it]
            # the volume this layer would repeat: the one before it, or the merge of a block
            prev = out[-1] if out else None
            if isinstance(prev, _Block):
                prev = prev.merge
            if (style.fold and m["kind"] in FOLDABLE and prev is not None
                    and list(m["out_shape"]) == prev.shape):
                prev.chips.append((m["name"], m["kind"], m.get("hyper_text", ""), str(it)))
                continue
            out.append(col(it))
        return _Seq(out)

    top = structure if graph else list(range(len(layers)))
    first = _Col("input", "INPUT", "", list(input_shape), "input", style)
    body = seq(top).items  # type: ignore[arg-type]
    elements = [first, *body]
    # rows: top-level items, a new row where one would pass WRAP_WIDTH (graphs only)
    # rows of about equal width, as few as WRAP_WIDTH allows (a drawing a little wider than
    # it stays one row, which the page shrinks to fit)
    widths = [el.measure(0.0)[0] for el in elements]
    total = sum(widths) + _GAP * (len(widths) - 1)
    limit = math.inf
    if graph and total > 1.25 * WRAP_WIDTH:
        limit = 1.08 * total / math.ceil(total / WRAP_WIDTH)
    rows: list[_Seq] = [_Seq([])]
    used = 0.0
    for el, w in zip(elements, widths, strict=True):
        if rows[-1].items and used + _GAP + w > limit:
            rows.append(_Seq([]))
            used = 0.0
        used += (_GAP if rows[-1].items else 0.0) + w
        rows[-1].items.append(el)
    parts: list[str] = []
    if len(rows) > 1:
        parts.append('<defs><marker id="arch-arrow" viewBox="0 0 8 8" refX="7" refY="4" '
                     'markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" '
                     'class="arrow-head"/></marker></defs>')
    y = 0.0
    total_w = 0.0
    prev: tuple[float, ...] | None = None   # the previous row's end x, axis, bottom, right edge
    for row in rows:
        hv = row.max_vol()
        w, up, down, lin, rin = row.measure(hv)
        axis = y + up
        if prev is not None:   # from the end of the last row, around, to the start of this one
            ex, eaxis, ebottom, eright = prev
            turn = ebottom + _ROW_GAP / 2
            parts.append(f'<path class="wire wrap" marker-end="url(#arch-arrow)" '
                         f'd="M{ex:.1f},{eaxis:.1f} H{eright + 6:.1f} V{turn:.1f} H{_PAD / 2:.1f} '
                         f'V{axis:.1f} H{_PAD + lin - 1:.1f}"/>')
        row.place(_PAD, axis, hv, parts, style)
        total_w = max(total_w, _PAD + w + _PAD + (12 if len(rows) > 1 else 0))
        prev = (_PAD + w - rin, axis, axis + down, _PAD + w)
        y = axis + down + _ROW_GAP
    height = y - _ROW_GAP
    return (f'<svg class="arch{" graph" if graph else ""}" width="{total_w:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {total_w:.0f} {height:.0f}" role="img" '
            f'aria-label="architecture">{"".join(parts)}</svg>')


__all__ = ["COMPACT_LAYERS", "FOLDABLE", "WRAP_WIDTH", "architecture_svg"]
