"""``convnet visualize``: one self-contained HTML page to look inside a model.

The page is built in two steps:

1. :func:`build_data` runs the engine in Python and collects everything the page shows as
   plain JSON: the architecture (shapes, K/F/S/P, parameters, MACs, receptive fields from
   :mod:`convnet.arith`), the weights, and for each embedded input image the activation volume
   of *every* layer (base64 float32, NHWC order). The activations are the engine's own, so the
   page never recomputes a forward pass of its own to show a map; when a unit is clicked, the
   page recomputes only that unit's dot product in float64 from the embedded float32 values and
   shows it beside the engine's value.

   Branching networks (:class:`~convnet.net.graph.Graph` with RES/CAT blocks) carry their
   wiring: each layer's ``input_idx`` (the layers it reads, -1 the input; a merge two or more,
   with a CAT's depth ``offsets``), where it sits in the blocks (``block``), what each input of a
   merge is (``lanes``: main branch, shortcut, identity, a projection the network inserted), and
   the block tree (``structure``) that the drawing (:mod:`convnet.viz.arch`) and the layer
   table lay out. The click-a-unit explainer reads a unit's own inputs: both summands of an
   ADD, the input and slice a CAT copies, only the group's slices of a grouped CONV, and walks
   back from there to the input along the branch the reader picks.
2. :func:`render_html` inlines the data, the stylesheet and the script of ``viz/assets`` into one
   HTML file that works offline from disk: no CDN, no network, no external URL.

Sizes are kept reasonable for large networks: at most ``max_maps`` maps per layer are drawn
(the others still take part in every explanation), the number of embedded images is cut to fit
``budget_floats``, and weight tensors over ``max_weights`` values are not embedded (the page says
so where it matters).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convnet import arith
from convnet.arith import fmt_shape
from convnet.data.transforms import Normalizer
from convnet.errors import ConfigError
from convnet.net.graph import Graph
from convnet.ops.loss import softmax
from convnet.safety import dumps_finite_json
from convnet.viz.arch import architecture_svg
from convnet.viz.common import (
    _normalize,
    curve_extent,
    fmt_tick,
    layer_activations,
    nice_ticks,
)
from convnet.viz.serve import serve  # noqa: F401 - it lived here; kept importable

ASSETS = Path(__file__).parent / "assets"

#: Floats of activations (all layers, all embedded images) a page may hold: 3M floats is 12 MB
#: of float32, about 16 MB of base64. Past it, fewer images are embedded.
DEFAULT_BUDGET_FLOATS = 3_000_000
#: A weight tensor larger than this is not embedded (an FC of a VGG: 100M values).
DEFAULT_MAX_WEIGHTS = 2_000_000
#: All the weights a page may embed (12 MB of float32): past it, later layers' weights are left out.
DEFAULT_WEIGHT_BUDGET = 3_000_000
DEFAULT_MAX_MAPS = 32
#: Test images run through the model for the confusion matrix and the worst mistakes: None is
#: the whole test set, the very images ``convnet eval`` counts, so the two report one accuracy.
DEFAULT_MAX_EVAL: int | None = None


# ------------------------------------------------------------------------------ the inputs
@dataclass
class Sample:
    """One input image to embed.

    Args:
        image: ``(H, W, D)`` in the model's raw range (``[0, 1]``), before normalisation.
        title: how the page names it ("test #12", a file name).
        label: the true class index, when known.
        source: ``"file"``, ``"test"`` or ``"wrong"`` (a confident mistake on the test set).
        notes: conversions done while loading the file (resize, grayscale), shown on the page.
    """

    image: np.ndarray
    title: str
    label: int | None = None
    source: str = "test"
    notes: list[str] = field(default_factory=list)


@dataclass
class TestEval:
    """The model's results on (a part of) the test set: the confusion matrix and its worst
    mistakes (indices into the evaluated images, most confident first)."""

    confusion: np.ndarray
    accuracy: float
    count: int
    total: int
    wrong: list[dict[str, Any]]


# --------------------------------------------------------------------------------- helpers
def b64_float32(a: np.ndarray) -> str:
    """Little-endian float32 bytes of ``a`` (C order) as base64: what the page decodes into a
    ``Float32Array``."""
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def decode_float32(text: str, shape: Sequence[int] | None = None) -> np.ndarray:
    """Inverse of :func:`b64_float32` (used by the tests)."""
    a = np.frombuffer(base64.b64decode(text), dtype="<f4")
    return a.reshape(tuple(shape)) if shape is not None else a


def _softmax(scores: np.ndarray) -> np.ndarray:
    """Probabilities in float64 (the page shows them to 4 digits)."""
    return softmax(np.asarray(scores, dtype=np.float64))


def _is_classifier(net: Graph) -> bool:
    return len(net.output_shape) == 1


def evaluate_test(net: Graph, x: np.ndarray, y: np.ndarray, num_wrong: int = 8,
                  batch_size: int = 256) -> TestEval:
    """Confusion matrix, accuracy and the most confident mistakes of ``net`` on ``(x, y)``.

    Shape:
        x ``(N, H, W, D)`` raw images, y ``(N,)`` -> confusion ``(C, C)``.
    """
    from convnet.train.metrics import confusion_matrix

    C = int(net.output_shape[-1])
    scores = net.predict(_normalize(net, x), batch_size=batch_size)
    probs = _softmax(scores)
    pred = probs.argmax(axis=1)
    y = np.asarray(y, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= C):
        raise ConfigError(
            f"the test labels range over [{y.min()}, {y.max()}] but the model has {C} outputs"
        )
    cm = confusion_matrix(y, pred, C)
    wrong_idx = np.flatnonzero(pred != y)
    conf = probs[wrong_idx, pred[wrong_idx]]
    order = wrong_idx[np.argsort(-conf, kind="stable")][:num_wrong]
    wrong = [{"index": int(i), "label": int(y[i]), "pred": int(pred[i]),
              "confidence": float(probs[i, pred[i]])} for i in order]
    return TestEval(cm, float((pred == y).mean()) if y.size else float("nan"), int(y.size),
                    int(y.size), wrong)


def _frac(v: Any) -> float:
    return float(v)


# ---------------------------------------------------------------------------- the data
def _layer_meta(net: Graph, max_weights: int, max_maps: int,
                weight_budget: int = DEFAULT_WEIGHT_BUDGET) -> list[dict[str, Any]]:
    rows = arith.layer_rows(net)
    metas = []
    left = weight_budget
    for i, (layer, row) in enumerate(zip(net.layers, rows, strict=True)):
        meta: dict[str, Any] = {
            "name": layer.name, "kind": layer.kind, "spec": layer.to_spec(),
            "describe": layer.describe(),
            "in_shape": list(layer.input_shape), "out_shape": list(layer.output_shape),
            "params": row.params, "macs": row.macs,
            "rf": {"size": [_frac(v) for v in row.rf.size], "jump": [_frac(v) for v in row.rf.jump],
                   "start": [_frac(v) for v in row.rf.start], "whole": bool(row.rf.whole)},
        }
        meta.update(layer.hyper())         # what the layer says of itself: K, window, p, ...
        meta["hyper_text"] = layer.short_hyper()
        meta["inputs"] = list(row.inputs)
        meta["input_idx"] = [int(k) for k in net.inputs_of[i]]
        if layer.inserted:
            meta["inserted"] = layer.inserted
        if layer.arity != 1:               # a merge: what each input is, and where it lands
            shapes = [list(s) for s in layer.input_shapes]  # type: ignore[attr-defined]
            meta["input_shapes"] = shapes
            meta["offsets"] = [int(v) for v in np.cumsum([0] + [s[-1] for s in shapes[:-1]])]
        out = layer.output_shape
        if len(out) == 3:
            meta["maps_shown"] = min(out[2], max_maps)
        weights: dict[str, Any] = {}
        too_big = []
        for key, value in {**layer.params, **layer.buffers}.items():
            if value.size > max_weights or value.size > left:
                too_big.append(key)
                continue
            left -= value.size
            weights[key] = {"shape": list(value.shape), "data": b64_float32(value)}
        meta["weights"] = weights
        if too_big:
            meta["weights_missing"] = too_big
        metas.append(meta)
    return metas


def _structure(net: Graph) -> tuple[list[Any], dict[int, list[list[int]]]]:
    """The block tree of ``net`` by layer index, and each layer's place in it.

    The tree (what the drawing and the layer table read) is a list of layer indices and blocks
    ``{"kind": "RES"|"CAT", "merge": i, "branches": [[...], ...], "lanes": [...]}``: one branch
    per input of the merge, in the merge's input order (an identity shortcut is an empty
    branch), and for each a lane ``{"role": "main"|"shortcut"|"identity"|"branch",
    "projection": bool, "text": ...}``; ``text`` is what ``convnet summary`` writes for that
    branch. The places map a layer index to its path ``[[merge, lane], ...]`` from the
    outermost block in. A tree that does not match ``net.inputs_of`` (a network without blocks,
    or one whose items were changed after it was built) gives a chain: every layer in order.
    """
    from convnet.net import blocks as B
    from convnet.report.summary import structure

    n = len(net.layers)
    chain = (list(range(n)), {i: [] for i in range(n)})
    items = getattr(net, "items", None)
    if not items:
        return chain
    index = {id(ly): i for i, ly in enumerate(net.layers)}
    texts = iter([what[1] for kind, _, what in structure(net) if kind == "label"])
    places: dict[int, list[list[int]]] = {}

    def walk(seq: list[Any], path: list[list[int]]) -> list[Any]:
        out: list[Any] = []
        for it in seq:
            if not isinstance(it, B.Block):
                places[index[id(it)]] = path
                out.append(index[id(it)])
                continue
            j = index[id(it.merge)]
            branches, lanes = [], []
            for b, branch in enumerate(it.branches):
                role = ("main" if b == 0 else "shortcut") if it.kind == "RES" else "branch"
                lanes.append({"role": role, "text": next(texts), "projection": any(
                    ly.inserted == "projection" for ly in B.flat_layers(branch))})
                branches.append(walk(branch, [*path, [j, b]]))
            if it.kind == "RES" and it.identity:
                lanes.append({"role": "identity", "text": next(texts), "projection": False})
                branches.append([])
            if len(branches) != len(net.inputs_of[j]):
                raise KeyError(j)
            places[j] = path
            out.append({"kind": it.kind, "merge": j, "branches": branches, "lanes": lanes})
        return out

    try:
        tree = walk(list(items), [])
    except (KeyError, StopIteration):
        return chain
    if sorted(places) != list(range(n)):
        return chain
    return tree, places


def _blocks(tree: list[Any]) -> list[dict[str, Any]]:
    """Every block of the tree, outer ones first."""
    out: list[dict[str, Any]] = []
    for it in tree:
        if isinstance(it, dict):
            out.append(it)
            for branch in it["branches"]:
                out += _blocks(branch)
    return out


def _flatten_info(net: Graph) -> dict[str, Any] | None:
    """Where a volume becomes a vector (the first FC, FLATTEN or GAP after a volume)."""
    for i, layer in enumerate(net.layers):
        ins = layer.input_shape
        if layer.fixed_size and len(ins) == 3:
            return {"layer": i, "name": layer.name, "kind": layer.kind, "shape": list(ins),
                    "n": arith.num_elements(ins)}
    return None


def _sample_floats(net: Graph) -> int:
    return 2 * arith.num_elements(net.input_shape) + sum(
        arith.num_elements(s) for s in net.shapes
    )


def read_metrics_log(run_dir: str | os.PathLike[str] | None,
                     history: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per-epoch records: ``metrics.jsonl`` (else ``metrics.csv``) of the run directory, else
    the checkpoint's ``history``. Non-numeric fields are dropped."""
    records: list[dict[str, Any]] = []
    if run_dir is not None:
        d = Path(run_dir)
        jsonl, csv_path = d / "metrics.jsonl", d / "metrics.csv"
        if jsonl.is_file():
            for line in jsonl.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interrupted run
                if isinstance(rec, dict):
                    records.append(rec)
        elif csv_path.is_file():
            import csv

            with open(csv_path, newline="", encoding="utf-8") as f:
                records = [dict(r) for r in csv.DictReader(f)]
    if not records and history:
        records = [dict(h) for h in history]
    out = []
    for rec in records:
        clean = {}
        for k, v in rec.items():
            try:
                fv = float(v)
            except (TypeError, ValueError):
                continue
            if math.isfinite(fv):
                clean[str(k)] = fv
        if clean:
            out.append(clean)
    # keep only the last record of each epoch (a resumed run repeats epochs, and some logs add
    # a line per evaluation)
    if out and all("epoch" in r for r in out):
        by_epoch: dict[float, dict[str, Any]] = {}
        for r in out:
            by_epoch.setdefault(r["epoch"], {}).update(r)
        out = [by_epoch[e] for e in sorted(by_epoch)]
    return out


def build_data(
    net: Graph,
    samples: Sequence[Sample],
    *,
    classes: Sequence[str] | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
    test_eval: TestEval | None = None,
    title: str = "convnet",
    notes: Sequence[str] = (),
    max_maps: int = DEFAULT_MAX_MAPS,
    budget_floats: int = DEFAULT_BUDGET_FLOATS,
    max_weights: int = DEFAULT_MAX_WEIGHTS,
) -> dict[str, Any]:
    """Everything the page shows, as JSON-serialisable data.

    ``samples`` are embedded in order until ``budget_floats`` is reached (at least one). Each
    embedded sample carries ``acts[i]``: the engine's output of layer ``i`` for that image,
    base64 float32 in NHWC order, and ``input``: the normalised network input. ``layers[i]``
    says what layer ``i`` reads (``inputs``: names, ``input_idx``: indices, -1 the input) and,
    in a block, where it sits; ``structure`` is the block tree (see :func:`_structure`).

    Shape:
        each ``Sample.image`` is ``(H, W, D)`` = ``net.input_shape``.
    """
    if len(net.input_shape) != 3:
        raise ConfigError(
            f"visualize needs a network on images (H x W x D input), not on vectors of "
            f"{net.input_shape[0]} features"
        )
    if not samples:
        raise ConfigError("visualize needs at least one input image (--image FILE or --data NAME)")
    if max_maps < 1:
        raise ConfigError(f"max_maps={max_maps} must be at least 1")
    if classes is None:
        classes = getattr(net, "classes", None)
    C = int(net.output_shape[-1])
    if classes is None or len(classes) != C:
        classes = [str(i) for i in range(C)]
    per = _sample_floats(net)
    keep = max(1, min(len(samples), budget_floats // max(per, 1)))
    notes = list(notes)
    if keep < len(samples):
        notes.append(
            f"{len(samples) - keep} of {len(samples)} images were left out to keep the page small "
            f"(each embeds {per:,} floats of activations; budget {budget_floats:,})."
        )
    chosen = list(samples[:keep])
    raw = np.stack([np.asarray(s.image, np.float32) for s in chosen])
    if raw.shape[1:] != tuple(net.input_shape):
        raise ConfigError(
            f"an image of shape {fmt_shape(raw.shape[1:])} cannot feed a network whose input is "
            f"{fmt_shape(net.input_shape)}"
        )
    x = _normalize(net, raw)
    acts = layer_activations(net, x)
    probs = _softmax(acts[-1]) if _is_classifier(net) else None
    sample_data = []
    for n, s in enumerate(chosen):
        entry: dict[str, Any] = {
            "title": s.title, "label": s.label, "source": s.source, "notes": list(s.notes),
            "raw": b64_float32(raw[n]), "input": b64_float32(x[n]),
            "acts": [b64_float32(a[n]) for a in acts],
        }
        if probs is not None:
            entry["probs"] = [float(p) for p in probs[n]]
            entry["pred"] = int(probs[n].argmax())
        sample_data.append(entry)

    rows = arith.layer_rows(net)
    layers = _layer_meta(net, max_weights, max_maps)
    tree, places = _structure(net)
    for i, path in places.items():
        if path:
            layers[i]["block"] = path     # [[merge, lane], ...] from the outermost block in
    for blk in _blocks(tree):
        layers[blk["merge"]]["lanes"] = blk["lanes"]  # what each of the merge's inputs is
    capped = [m["name"] for m in layers
              if len(m["out_shape"]) == 3 and m["maps_shown"] < m["out_shape"][2]]
    if capped:
        notes.append(
            f"At most {max_maps} activation maps are drawn per layer ({', '.join(capped)} have "
            "more); every map still takes part in the numbers of a clicked unit."
        )
    missing = [m["name"] for m in layers if m.get("weights_missing")]
    if missing:
        notes.append(
            f"The weights of {', '.join(missing)} are not embedded (over {max_weights:,} values "
            "in one layer, or past the page's budget): clicking their units shows the engine's "
            "value only."
        )
    total_params = sum(r.params for r in rows)
    data: dict[str, Any] = {
        "format": "convnet-viz", "version": 2,
        "title": title,
        "model": {
            "spec": net.spec, "input_shape": list(net.input_shape),
            "output_shape": list(net.output_shape), "params": int(total_params),
            "macs": int(sum(r.macs for r in rows)),
            "normalizer": _normalizer_json(net),
        },
        "classes": [str(c) for c in classes],
        "layers": layers,
        "structure": tree,
        "flatten": _flatten_info(net),
        "samples": sample_data,
        "history": [dict(h) for h in history] if history else [],
        "notes": notes,
    }
    if test_eval is not None:
        data["test"] = {
            "confusion": test_eval.confusion.tolist(), "accuracy": test_eval.accuracy,
            "count": test_eval.count, "total": test_eval.total, "wrong": test_eval.wrong,
        }
    return data


def _normalizer_json(net: Graph) -> dict[str, list[float]] | None:
    stats = Normalizer.coerce(getattr(net, "normalizer", None))
    if stats is None:
        return None
    return {"mean": [float(v) for v in stats.mean], "std": [float(v) for v in stats.std]}


# ------------------------------------------------------------------------- static pieces
def _fmt_count(n: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def curves_svg(history: Sequence[Mapping[str, float]], which: str) -> str:
    """A line chart of every metric whose name contains ``which`` (``"loss"`` or ``"acc"``)
    against the epoch, as inline SVG; empty string when the log has none."""
    if not history:
        return ""
    keys = sorted({k for h in history for k in h if which in k.lower() and k != "epoch"})
    if not keys:
        return ""
    epochs, (lo, hi), (e0, e1) = curve_extent(history, keys, unit_range=which == "acc")
    W, H, L, R, T, B = 420, 240, 56, 12, 22, 36
    pw, ph = W - L - R, H - T - B

    def X(e: float) -> float:
        return L + (e - e0) / (e1 - e0) * pw

    def Y(v: float) -> float:
        return T + (1 - (v - lo) / (hi - lo)) * ph

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    parts = [f'<rect class="plot-bg" x="{L}" y="{T}" width="{pw}" height="{ph}"/>']
    # round values (1-2-5 steps), accuracies as percentages, whole epochs only
    percent = which == "acc" and hi <= 1.0
    ticks = [v for v in nice_ticks(lo, hi, 6) if lo - 1e-9 <= v <= hi + 1e-9]
    for v in ticks:
        parts.append(f'<line class="grid" x1="{L}" x2="{L + pw}" y1="{Y(v):.1f}" y2="{Y(v):.1f}"/>'
                     f'<text class="tick" x="{L - 4}" y="{Y(v) + 4:.1f}" text-anchor="end">'
                     f'{fmt_tick(v, ticks, percent)}</text>')
    last = max(epochs)
    for e in nice_ticks(e0, last, 8, integer=True, inside=True):
        parts.append(f'<text class="tick" x="{X(e):.1f}" y="{T + ph + 14}" '
                     f'text-anchor="middle">{e:.0f}</text>')
    parts.append(f'<text class="axis" x="{L + pw / 2}" y="{H - 4}" text-anchor="middle">'
                 'epoch</text>')
    for j, k in enumerate(keys):
        pts = [(X(e), Y(h[k])) for e, h in zip(epochs, history, strict=True) if k in h]
        c = colors[j % len(colors)]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{path}"/>')
        parts.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{c}"/>' for px, py in pts)
        # inline style: a stylesheet's `text { fill }` would override a fill attribute
        parts.append(f'<text x="{L + 8 + 110 * j}" y="{T - 7}" style="fill:{c}" class="key">'
                     f'&#9632; {html.escape(k)}</text>')
    return (f'<svg class="curve" data-metric="{which}" width="{W}" height="{H}" '
            f'viewBox="0 0 {W} {H}" role="img" aria-label="{which} per epoch">'
            f'{"".join(parts)}</svg>')


def confusion_html(cm: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """The confusion matrix as an HTML table, each cell shaded by its share of the true class's
    row (rows: true class; columns: predicted class)."""
    rows_html = []
    head = "".join(f"<th title='predicted {html.escape(c)}'>{html.escape(c)}</th>" for c in classes)
    for i, row in enumerate(cm):
        total = max(sum(row), 1)
        cells = []
        for j, v in enumerate(row):
            share = v / total
            cls = "diag" if i == j else "off"
            cells.append(f'<td class="{cls}" style="--share:{share:.3f}" '
                         f'title="true {html.escape(classes[i])}, predicted '
                         f'{html.escape(classes[j])}: {v}">{v}</td>')
        rows_html.append(f"<tr><th>{html.escape(classes[i])}</th>{''.join(cells)}</tr>")
    return (f'<table class="confusion"><thead><tr><th class="corner">true \\ predicted</th>'
            f'{head}</tr></thead><tbody>{"".join(rows_html)}</tbody></table>')


def layer_table_html(data: Mapping[str, Any]) -> str:
    """One row per layer: the summary's numbers (shape, parameters, MACs, receptive field).

    For a branching network the rows follow the block tree as ``convnet summary`` lays it out:
    each branch headed by what it is (``RES[ main branch``, ``| shortcut ...``), its layers
    indented, and a column that says what each merge (and each branch's first layer) reads."""
    from fractions import Fraction

    layers = data["layers"]
    tree = data.get("structure") or list(range(len(layers)))
    graph = any(isinstance(it, Mapping) for it in tree)
    reads_head = "<th>reads</th>" if graph else ""

    def layer_row(i: int, depth: int) -> str:
        m = layers[i]
        rf = m["rf"]
        size = arith.fmt_frac_pair(tuple(Fraction(v).limit_denominator(64) for v in rf["size"]))
        jump = arith.fmt_frac_pair(tuple(Fraction(v).limit_denominator(64) for v in rf["jump"]))
        rf_txt = f"{size} (jump {jump})" + (" whole input" if rf["whole"] else "")
        ins = m.get("input_idx", [i - 1])
        reads = ""
        if graph:
            join = " + " if m["kind"] == "ADD" else ", "
            text = join.join(m["inputs"]) if len(ins) > 1 or ins != [i - 1] else ""
            reads = f"<td class='reads'>{html.escape(text)}</td>"
        style = f" style='padding-left:{10 + 16 * depth}px'" if depth else ""
        cls = " class='merge'" if len(ins) > 1 else ""
        return (f"<tr{cls} data-layer='{i}'><td{style}>{html.escape(m['name'])}</td>"
                f"<td><code>{html.escape(m['spec'])}</code></td>"
                f"<td>{fmt_shape(tuple(m['out_shape']))}</td><td class='num'>{m['params']:,}</td>"
                f"<td class='num'>{m['macs']:,}</td><td>{html.escape(rf_txt)}</td>{reads}</tr>")

    rows = [
        f"<tr><td>input</td><td>INPUT</td><td>{fmt_shape(tuple(data['model']['input_shape']))}"
        f"</td><td></td><td></td><td></td>{'<td></td>' if graph else ''}</tr>"
    ]

    def walk(items: Sequence[Any], depth: int) -> None:
        for it in items:
            if not isinstance(it, Mapping):
                rows.append(layer_row(int(it), depth))
                continue
            for b, (branch, lane) in enumerate(zip(it["branches"], it["lanes"], strict=True)):
                mark = f"{it['kind']}[" if b == 0 else "|"
                rows.append(f"<tr class='branch'><td colspan='7' style='padding-left:"
                            f"{10 + 16 * depth}px'><span class='bmark'>{mark}</span> "
                            f"{html.escape(lane['text'])}</td></tr>")
                walk(branch, depth + 1)
            rows.append(layer_row(int(it["merge"]), depth))

    walk(tree, 0)
    model = data["model"]
    rows.append(
        f"<tr class='total'><td>total</td><td></td><td></td><td class='num'>{model['params']:,}"
        f"</td><td class='num'>{model['macs']:,}</td><td></td>{'<td></td>' if graph else ''}</tr>"
    )
    return ("<table class='layers'><thead><tr><th>layer</th><th>spec</th><th>output</th>"
            f"<th>params</th><th>MACs</th><th>receptive field</th>{reads_head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


# ---------------------------------------------------------------------------- the page
def _json_for_script(data: Mapping[str, Any]) -> str:
    # "</" would end the <script> element early; "<!--" could start a comment state.
    text = dumps_finite_json(data, "visualize", separators=(",", ":"))
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _arch_note(data: Mapping[str, Any]) -> str:
    """How to read the drawing of a branching network (nothing for a chain)."""
    from convnet.viz.arch import COMPACT_LAYERS

    tree = data.get("structure") or []
    if not any(isinstance(it, Mapping) for it in tree):
        return ""
    note = (" A block's branches are lanes that fork from the block's input and meet in its "
            "merge (&oplus; ADD, the sum of a residual block; a circled stack: CAT, along depth); "
            "a projection the network inserted on a shortcut is purple, merges are green.")
    if len(data["layers"]) > COMPACT_LAYERS:
        note += (" Layers that keep the shape of the volume before them (BN, activations, "
                 "dropout) are the small chips under it; click one for its maps.")
    return note


def render_html(data: Mapping[str, Any]) -> str:
    """The whole page as one string: template, CSS, script and data inlined."""
    template = (ASSETS / "page.html").read_text(encoding="utf-8")
    css = (ASSETS / "page.css").read_text(encoding="utf-8")
    js = (ASSETS / "page.js").read_text(encoding="utf-8")
    hist = data.get("history") or []
    curves = curves_svg(hist, "loss") + curves_svg(hist, "acc")
    if not curves:
        curves = "<p class='muted'>No metrics log was found next to the model (metrics.jsonl or " \
                 "metrics.csv in the run directory), so there are no training curves.</p>"
    test = data.get("test")
    if test:
        acc, count, total = test["accuracy"], test["count"], test.get("total", test["count"])
        if count >= total:
            on = f"all {count:,} test images"
        else:
            on = (f"{count:,} of the {total:,} test images, drawn at random (--eval-images); "
                  "<code>convnet eval</code> counts all of them, so its figure may differ a "
                  "little")
        confusion = (f"<p>Accuracy on {on}: <b>{100 * acc:.2f}%</b>.</p>"
                     + confusion_html(test["confusion"], data["classes"]))
    else:
        confusion = "<p class='muted'>No test set was given (--data NAME), so there is no " \
                    "confusion matrix.</p>"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.get("notes", []))
    m = data["model"]
    summary = (f"{fmt_shape(tuple(m['input_shape']))} &rarr; {fmt_shape(tuple(m['output_shape']))}"
               f" &middot; {m['params']:,} parameters &middot; {_fmt_count(m['macs'])} MACs per "
               f"image &middot; {len(data['layers'])} layers")
    pieces = {
        "TITLE": html.escape(str(data.get("title", "convnet"))),
        "SPEC": html.escape(m["spec"]),
        "SUMMARY": summary,
        "NOTES": f"<ul class='notes'>{notes}</ul>" if notes else "",
        "ARCH": architecture_svg(data["layers"], m["input_shape"], data.get("structure")),
        "ARCH_NOTE": _arch_note(data),
        "LAYER_TABLE": layer_table_html(data),
        "CURVES": curves,
        "CONFUSION": confusion,
        "CSS": css,
        "JS": js,
        "DATA": _json_for_script(data),
    }
    out = template
    for key, value in pieces.items():
        out = out.replace(f"%%{key}%%", value)
    return out


def write_page(data: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Render ``data`` and write the page to ``path`` (its directory is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(data), encoding="utf-8")
    return path


# ------------------------------------------------------------------------- from a model
@dataclass
class ModelInfo:
    """A model to look at and what came with it (see :func:`load_model`)."""

    net: Graph
    title: str
    classes: list[str] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    data_name: str | None = None
    notes: list[str] = field(default_factory=list)


def _data_name(ckpt: Any) -> str | None:
    # the training issue stores the data set's name in the input info or the run config; accept
    # the spellings it may use
    for source in (ckpt.input, ckpt.config, ckpt.extra):
        for key in ("dataset", "data", "data_set", "name"):
            value = source.get(key) if isinstance(source, Mapping) else None
            if isinstance(value, str) and value:
                return value
    return None


def load_model(model: str | os.PathLike[str], seed: int = 0) -> ModelInfo:
    """The network a ``MODEL`` argument names, with its class names and metrics log.

    ``model`` is a checkpoint (``.npz``) or a run directory (its ``best.npz``, else
    ``last.npz``; ``metrics.jsonl`` or ``metrics.csv`` there give the curves). An architecture
    (a zoo name or spec text such as ``"INPUT(8x8x1) -> CONV(4,F=3) -> FC(10)"``) that is not an
    existing path is built with random weights, which the page says.

    Raises :class:`~convnet.errors.CheckpointError` for a missing or unreadable checkpoint.
    """
    from convnet.errors import CheckpointError, SpecError
    from convnet.train.checkpoint import load_checkpoint

    text = str(model)
    path = Path(text).expanduser()
    if not path.exists():
        looks_like_spec = "->" in text or "(" in text
        names: list[str] = []
        try:
            from convnet.spec import build, zoo_names

            names = list(zoo_names())
        except ImportError:  # pragma: no cover - the spec module ships with the package
            build = None  # type: ignore[assignment]
        if build is not None and (looks_like_spec or text.lower() in names):
            try:
                net = build(text, seed=seed)
            except SpecError as exc:
                raise CheckpointError(f"{text}: no such checkpoint file, and not an "
                                      f"architecture either: {exc}") from None
            return ModelInfo(net, text if text.lower() in names else "untrained network",
                             notes=["This network is untrained: its weights are random "
                                    f"(seed {seed}), so its maps show no learnt features."])
        raise CheckpointError(f"{text}: no such checkpoint file or run directory")
    ckpt = load_checkpoint(path)
    net = ckpt.net
    net.classes = ckpt.classes  # type: ignore[attr-defined]
    net.normalizer = ckpt.normalizer  # type: ignore[attr-defined]
    run_dir = ckpt.path.parent
    history = read_metrics_log(run_dir, ckpt.history)
    title = run_dir.name if ckpt.path.name in ("best.npz", "last.npz") else ckpt.path.stem
    notes = []
    if ckpt.normalizer is not None:
        notes.append("Inputs are normalised per channel with the training set's mean and std "
                     "before conv1: the numbers of the first layer's windows are normalised "
                     "values, the pictures show the raw image.")
    return ModelInfo(net, f"{title} (epoch {ckpt.epoch})" if ckpt.epoch else title,
                     ckpt.classes, history, _data_name(ckpt), notes)


def load_test_set(name: str, net: Graph) -> Any:
    """The test split of data set ``name`` (or a directory), converted to the model's input
    size and depth; :class:`~convnet.errors.DataError` when it cannot be had."""
    from convnet.data import load_dataset

    h, w, d = net.input_shape
    _, test = load_dataset(name)
    if test.input_shape != (h, w, d):
        from convnet.data import convert_images

        test.x = convert_images(test.x, (h, w), d)
    return test


def visualize(
    net: Graph,
    output: str | os.PathLike[str],
    *,
    images: Sequence[Sample] = (),
    test_set: Any = None,
    samples: int = 16,
    history: Sequence[Mapping[str, Any]] | None = None,
    classes: Sequence[str] | None = None,
    title: str = "convnet",
    notes: Sequence[str] = (),
    seed: int = 0,
    max_maps: int = DEFAULT_MAX_MAPS,
    max_eval: int | None = DEFAULT_MAX_EVAL,
    budget_floats: int = DEFAULT_BUDGET_FLOATS,
) -> Path:
    """Write the page for ``net``: the given ``images`` first, then (with a ``test_set``, a
    :class:`~convnet.data.Dataset`) its most confident mistakes and ``samples`` test images.

    The accuracy and the confusion matrix count the whole test set (as ``convnet eval`` does);
    ``max_eval`` limits them to that many test images drawn at random with ``seed`` (the page
    then says so).

    >>> import convnet as cn, numpy as np, tempfile, os
    >>> net = cn.build("INPUT(8x8x1) -> CONV(2,F=3) -> RELU -> FC(3)", seed=0)
    >>> img = Sample(np.zeros((8, 8, 1), np.float32), "blank")
    >>> visualize(net, os.path.join(tempfile.mkdtemp(), "r.html"), images=[img]).suffix
    '.html'
    """
    chosen = list(images)
    test_eval = None
    if test_set is not None:
        if classes is None and getattr(test_set, "classes", None) is not None \
                and len(test_set.classes) == net.output_shape[-1]:
            classes = list(test_set.classes)
        rng = np.random.default_rng(seed)
        if max_eval is not None and max_eval < 1:
            raise ConfigError(f"max_eval={max_eval}: evaluate at least 1 test image (None: all)")
        n_eval = len(test_set) if max_eval is None else min(len(test_set), max_eval)
        eval_idx = np.sort(rng.permutation(len(test_set))[:n_eval])
        if test_set.x.shape[1:] != tuple(net.input_shape):
            raise ConfigError(
                f"the test images are {fmt_shape(test_set.x.shape[1:])} but the model's input is "
                f"{fmt_shape(net.input_shape)}: choose the data set it was trained on"
            )
        if _is_classifier(net):
            test_eval = evaluate_test(net, test_set.x[eval_idx], test_set.y[eval_idx])
            test_eval.total = len(test_set)
            for w in test_eval.wrong:
                w["index"] = int(eval_idx[w["index"]])
        names = classes if classes is not None else [str(i) for i in range(net.output_shape[-1])]
        wrong_samples = []
        for w in (test_eval.wrong if test_eval else []):
            i = w["index"]
            wrong_samples.append(Sample(
                test_set.x[i], f"test #{i}: a {names[w['label']]} taken for a "
                f"{names[w['pred']]} ({100 * w['confidence']:.1f}%)", int(test_set.y[i]),
                "wrong"))
        wrong_ids = {w["index"] for w in (test_eval.wrong if test_eval else [])}
        picks = [int(i) for i in rng.permutation(len(test_set)) if int(i) not in wrong_ids]
        test_samples = [Sample(test_set.x[i], f"test #{i}", int(test_set.y[i]), "test")
                        for i in picks[:samples]]
        # files first, then a few test images, then the mistakes; interleaved so a budget cut
        # keeps some of each
        chosen += test_samples[:8] + wrong_samples + test_samples[8:]
    data = build_data(net, chosen, classes=classes, history=history, test_eval=test_eval,
                      title=title, notes=notes, max_maps=max_maps, budget_floats=budget_floats)
    return write_page(data, output)


__all__ = [
    "DEFAULT_BUDGET_FLOATS", "DEFAULT_MAX_EVAL", "DEFAULT_MAX_MAPS", "DEFAULT_MAX_WEIGHTS",
    "ModelInfo", "Sample", "TestEval", "architecture_svg", "b64_float32", "build_data",
    "confusion_html", "curves_svg", "decode_float32", "evaluate_test", "layer_table_html",
    "load_model", "load_test_set", "read_metrics_log", "render_html", "serve", "visualize",
    "write_page",
]
