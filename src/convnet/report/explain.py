"""``explain``: the derivation of every layer in words and numbers, as a teacher would write it.

For each layer: the input volume, the output-size formula with the numbers put in, why the depth
is what it is, each filter's shape and weights, parameters with and without sharing, MACs, the
receptive field. After the layers: totals and, for a net with FC layers, its fully convolutional
equivalent (each FC as a CONV whose filter covers its whole input).

A configuration that does not fit is explained, not just rejected: the layers up to the failure
are derived as usual, then the failing layer's formula with the numbers and what would fit
(the :class:`~convnet.errors.ShapeError` text of :mod:`convnet.arith`). :func:`derive` returns
the text and the error; :func:`explain` returns the text; ``convnet explain`` prints it and exits
with status 2 when the network does not fit (as for any other error), 0 otherwise.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from convnet import arith
from convnet.arith import LayerRow, fmt_frac_pair, fmt_pair, fmt_shape
from convnet.errors import ShapeError
from convnet.net.sequential import Sequential
from convnet.report import Source, _is_saved_model, load_network

WIDTH = 96


@dataclass
class Derivation:
    """The explanation's text, and the :class:`ShapeError` of the layer that does not fit (None
    when the whole network works)."""

    text: str
    error: ShapeError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# ----------------------------------------------------------------------------- loading
def _partial(source: Source, input_shape: tuple[int, ...] | None) -> tuple[Any, list[Any],
                                                                           ShapeError | None]:
    """Build ``source`` layer by layer, keeping the layers that work and the first error.

    Returns ``(net_like, layers_built, error)``: ``net_like`` has ``layers`` (those that built,
    with shapes set), ``input_shape`` and ``spec``; ``error`` is the failing layer's ShapeError.
    """
    try:
        net = load_network(source, input_shape)
        return net, net.layers, None
    except ShapeError as exc:
        first_error = exc
    if isinstance(source, Sequential) or _is_saved_model(source):
        raise first_error  # only input_shape can fail here, and it is no spec to walk through
    import convnet.layers as layer_module
    from convnet.spec.parser import LAYERS, parse, resolve

    text, origin = resolve(source)
    shape, specs = parse(text, origin=origin)
    if input_shape is not None:
        shape = tuple(input_shape)
    if shape is None:  # pragma: no cover - load_network raised a SpecError for that already
        raise first_error
    # the constructors accepted these arguments already (build got as far as the shapes)
    layers = [getattr(layer_module, LAYERS[s.kind].cls)(**s.kwargs) for s in specs]
    counts: dict[str, int] = {}
    for layer in layers:  # named as Sequential names them: conv1, relu1, pool1, ...
        key = layer.kind.lower()
        counts[key] = counts.get(key, 0) + 1
        layer.name = f"{key}{counts[key]}"
    built, current = [], tuple(shape)
    for layer in layers:
        try:
            out = layer.infer_shape(current)
        except ShapeError as exc:
            failed = SimpleNamespace(layers=built, input_shape=tuple(shape), dtype=None,
                                     spec=text, failed_layer=layer, failed_input=current,
                                     remaining=len(layers) - len(built) - 1)
            return failed, built, exc
        layer.input_shape, layer.output_shape = current, out
        built.append(layer)
        current = out
    raise first_error  # the error was not a layer's (e.g. an input size); nothing to walk


# ---------------------------------------------------------------------------- wording
def _n(x: int) -> str:
    return f"{x:,}"


def _wrap(text: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_on_hyphens=False, break_long_words=False)


def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[0]}x{shape[1]}"


def _formula_text(layer: Any) -> str:
    """``(227 - 11 + 2*0)/4 + 1 = 55`` (one per axis when rows and columns differ)."""
    ins = layer.input_shape
    lines = arith.window_formula((ins[0], ins[1]), layer.window)
    if len(lines) == 1:
        return lines[0]
    return f"rows {lines[0]}; columns {lines[1]}"


def _rf_sentence(row: LayerRow) -> str:
    rf = row.rf
    if rf.whole:
        return "Receptive field: every output sees the whole input."
    size, jump = fmt_frac_pair(rf.size), fmt_frac_pair(rf.jump)
    box = size if "x" in size else f"{size}x{size}"
    pixels = "pixel" if jump == "1" else "pixels"
    return (f"Receptive field: each unit sees {box} input pixels (padding included); "
            f"neighbouring units are {jump} input {pixels} apart (effective stride {jump}).")


def _conv_lines(layer: Any, row: LayerRow) -> list[str]:
    ins, outs, w = layer.input_shape, layer.output_shape, layer.window
    D, K = ins[2], layer.K
    fh, fw = w.F
    per_filter = fh * fw * D
    n_out = outs[0] * outs[1] * K
    dil = ""
    if w.dilation != (1, 1):
        dil = (f" The filter is dilated by {fmt_pair(w.dilation)}: its taps are spread to an "
               f"effective extent F_eff = F + (F - 1)(d - 1) = {fmt_pair(w.extent)}.")
    bias = "plus 1 bias" if layer.bias else "no bias"
    text = [
        f"Input volume: {fmt_shape(ins)} (H x W x D, so D1 = {D}).",
        f"Output side: (W1 - F + 2P)/S + 1 = {_formula_text(layer)}.{dil}",
        f"Depth: D2 = K = {K}. Each of the {K} filters slides over the whole input and gives one "
        f"{_hw(outs)} activation map; the {K} maps are stacked into {fmt_shape(outs)}.",
        f"Each filter is {fh}x{fw}x{D} (its depth always "
        f"equals the input depth {D}): {fh}*{fw}*{D} = {_n(per_filter)} weights, {bias}.",
        f"Parameters: ({fh}*{fw}*{D})*{K} weights"
        + (f" + {K} biases" if layer.bias else "")
        + f" = {_n(row.params)}. Parameter sharing: a filter's weights are the same at all "
        f"{outs[0]}*{outs[1]} = {_n(outs[0] * outs[1])} positions of its map. Without sharing, "
        f"each of the {outs[0]}*{outs[1]}*{K} = {_n(n_out)} output units would need its own "
        f"{_n(per_filter)} weights{' and bias' if layer.bias else ''}: "
        f"{_n(arith.conv_params_unshared((outs[0], outs[1]), w.F, D, K, layer.bias))}.",
        f"MACs: {_n(n_out)} outputs x {_n(per_filter)} = {_n(row.macs)}.",
    ]
    return text


def _deconv_lines(layer: Any, row: LayerRow) -> list[str]:
    ins, outs, w = layer.input_shape, layer.output_shape, layer.window
    D, K = ins[2], layer.K
    parts = []
    for i in range(2):
        a = layer.output_padding[i]
        parts.append(f"{w.S[i]}*({ins[i]} - 1) + {w.extent[i]} - 2*{w.P[i]} + {a} = {outs[i]}")
    formula = parts[0] if parts[0] == parts[1] else f"rows {parts[0]}; columns {parts[1]}"
    fh, fw = w.F
    return [
        f"Input volume: {fmt_shape(ins)}. A transposed convolution (DECONV) upsamples: each input "
        f"unit scatters a {fh}x{fw}x{K} patch, weighted, into the output, the patches "
        f"{fmt_pair(w.S)} pixel(s) apart.",
        f"Output side: S(W1 - 1) + F - 2P + a = {formula} (a is the output padding, a < S).",
        f"It is the reverse of a CONV(F={fmt_pair(w.F)}, S={fmt_pair(w.S)}, P={fmt_pair(w.P)}), "
        f"which maps {_hw(outs)} back to {_hw(ins)}: its forward pass is that CONV's input "
        "gradient.",
        f"Depth: D2 = K = {K}. Weights: {fh}*{fw}*{D}*{K}"
        + (f" + {K} biases" if layer.bias else "") + f" = {_n(row.params)} parameters.",
        f"MACs: {_n(ins[0] * ins[1] * D)} input values x {fh}*{fw}*{K} = {_n(row.macs)}.",
    ]


def _pool_lines(layer: Any, row: LayerRow) -> list[str]:
    ins, outs, w = layer.input_shape, layer.output_shape, layer.window
    what = "maximum" if layer.kind == "POOL" else "mean"
    return [
        f"Input volume: {fmt_shape(ins)}. Each {w.F[0]}x{w.F[1]} window (stride {fmt_pair(w.S)}) "
        f"of each of the {ins[2]} depth slices is replaced by its {what}; the slices are pooled "
        f"independently, so the depth stays {ins[2]}.",
        f"Output side: (W1 - F + 2P)/S + 1 = {_formula_text(layer)}: {_hw(ins)} -> {_hw(outs)} "
        f"per slice, {fmt_shape(outs)} in all.",
        f"No parameters: the {what} is a fixed operation, nothing to learn.",
    ]


def _fc_lines(layer: Any, row: LayerRow) -> list[str]:
    ins, K = layer.input_shape, layer.K
    n = arith.num_elements(ins)
    lines = []
    if len(ins) == 3:
        lines.append(
            f"Flattens the {fmt_shape(ins)} volume into {ins[0]}*{ins[1]}*{ins[2]} = {_n(n)} "
            f"values ({fmt_shape(ins)} -> {n}), in NHWC order: row by row, left to right, the "
            f"{ins[2]} depth values of each position together.")
    lines += [
        f"Each of the {_n(K)} outputs is a dot product with all {_n(n)} inputs"
        + (" plus a bias" if layer.bias else "") + f": {_n(n)}*{_n(K)} weights"
        + (f" + {_n(K)} biases" if layer.bias else "") + f" = {_n(row.params)} parameters.",
        f"MACs: {_n(n)} x {_n(K)} = {_n(row.macs)}.",
    ]
    return lines


def _simple_lines(layer: Any, row: LayerRow) -> list[str]:
    ins, outs, kind = layer.input_shape, layer.output_shape, layer.kind
    size = _n(arith.num_elements(ins))
    if kind == "GAP":
        return [f"Global average pooling: the mean of each whole {_hw(ins)} depth slice, "
                f"{fmt_shape(ins)} -> {outs[0]}. No parameters."]
    if kind == "FLATTEN":
        return [f"Flattens {fmt_shape(ins)} -> {outs[0]} in NHWC order (row by row, left to "
                "right, all depth values of a position together). No parameters."]
    if kind == "BN":
        D = ins[-1]
        over = "the batch and every position" if len(ins) == 3 else "the batch"
        return [f"Batch normalisation: each of the {D} depth slices is normalised over {over}, "
                f"then scaled by gamma and shifted by beta: 2*{D} = {row.params} parameters "
                "(running mean and variance are kept too, but not trained). Shape unchanged."]
    if kind == "DROPOUT":
        return [f"During training each of the {size} values is zeroed with probability "
                f"p = {layer.p:g} and the rest scaled by 1/(1 - p); at test time it does nothing. "
                "Shape unchanged, no parameters."]
    fn = {"RELU": "max(0, x)", "LRELU": f"max({getattr(layer, 'alpha', 0.01):g}x, x)",
          "TANH": "tanh(x)", "SIGMOID": "1/(1 + exp(-x))"}.get(kind, kind.lower())
    return [f"{fn} applied to each of the {size} values on its own: shape unchanged "
            f"({fmt_shape(outs)}), no parameters."]


def _layer_block(layer: Any, row: LayerRow) -> list[str]:
    head = (f"{layer.name}: {row.spec}   {fmt_shape(row.input_shape)} -> "
            f"{fmt_shape(row.output_shape)}")
    kind = layer.kind
    if kind == "CONV":
        body = _conv_lines(layer, row)
    elif kind == "DECONV":
        body = _deconv_lines(layer, row)
    elif kind in ("POOL", "AVGPOOL"):
        body = _pool_lines(layer, row)
    elif kind == "FC":
        body = _fc_lines(layer, row)
    else:
        body = _simple_lines(layer, row)
    if kind in ("CONV", "DECONV", "POOL", "AVGPOOL", "FC", "GAP"):
        body.append(_rf_sentence(row))
    out = [head]
    for sentence in body:
        out += _wrap(sentence)
    return out


# ---------------------------------------------------------------- fully convolutional
def _fully_convolutional(net: Any, rows: list[LayerRow]) -> list[str]:
    """Each FC as a CONV whose filter covers its whole input: pure arithmetic on the shapes.

    FLATTEN disappears (a CONV reads the volume directly) and a GAP followed by FC layers
    becomes the average pool of the same window, so every layer keeps a volume. The weights
    themselves are converted by :mod:`convnet.fcn`; this only describes the result.
    """
    if len(net.input_shape) != 3:
        return []
    if not any(r.kind == "FC" for r in rows):
        if any(r.kind == "FLATTEN" for r in rows):
            return []
        return ["Fully convolutional: there is no FC layer, so the network runs on any input "
                "large enough for its windows."]
    out = ["Fully convolutional equivalent: each FC becomes a CONV whose filter covers its "
           "whole input, with the same weights reshaped (so the same parameter count):"]
    from convnet.fcn.convert import conversion_plan

    # the layers the conversion makes (fcn/convert.py): one rule, used here and for the weights
    plan = conversion_plan(net)
    chain = [new.to_spec() for _, new in plan if new is not None]
    short: list[str] = []
    for (layer, new), r in zip(plan, rows, strict=True):
        if r.kind != "FC":
            continue
        ins = r.input_shape
        h, w = new.window.F  # the volume this FC reads (through any FLATTEN)
        D = arith.num_elements(ins) // (h * w)
        conv = f"CONV({layer.K},F={fmt_pair((h, w))}{'' if layer.bias else ',bias=false'})"
        formula = arith.window_formula((h, w), arith.Window(F=(h, w)))[0]
        out += _wrap(f"{r.name}: {r.spec} on {h}x{w}x{D} -> {conv}: {formula}, so "
                     f"{h}x{w}x{D} -> 1x1x{layer.K}; {h}*{w}*{D}*{layer.K}"
                     + (f" + {layer.K}" if layer.bias else "")
                     + f" = {_n(r.params)} parameters either way.")
        if not short:
            short.append(f"{h}x{w}x{D}")
        short.append(f"CONV F={fmt_pair((h, w))} K={layer.K}")
    # the seeds' short form: 7x7x512 -> CONV F=7 K=4096 -> CONV F=1 K=4096 -> CONV F=1 K=1000
    out += _wrap("In short: " + " -> ".join(short) + f" -> 1x1x{rows[-1].output_shape[-1]}.")
    spec = " -> ".join([f"INPUT({fmt_shape(net.input_shape)})", *chain])
    out += _wrap(f"As a spec: {spec}")
    return out + _larger_input(net, rows, spec)


def _larger_input(net: Any, rows: list[LayerRow], spec: str) -> list[str]:
    """On a larger image the converted net slides, giving a map of scores (as in CS231n: VGG on
    384x384 gives 6x6 scores)."""
    from convnet.spec import build

    first = next(i for i, r in enumerate(rows) if r.kind == "FC")
    jump = rows[first - 1].rf.jump if first else (1, 1)
    if any(j.denominator != 1 for j in jump):
        return []
    H, W, D = net.input_shape
    bigger = (H + 5 * int(jump[0]), W + 5 * int(jump[1]), D)
    try:
        conv_net = build(spec, input_shape=bigger, weights=False)
    except ShapeError:
        return []
    out = conv_net.output_shape
    step = fmt_pair((int(jump[0]), int(jump[1])))
    return _wrap(f"On a larger {fmt_shape(bigger)} image it slides, in one pass, over every "
                 f"position {step} input pixel{'' if step == '1' else 's'} apart: the "
                 f"output is a {fmt_shape(out)} map of scores instead of one {out[-1]}-vector.")


# ------------------------------------------------------------------------------- public
def derive(source: Source, input_shape: tuple[int, ...] | None = None) -> Derivation:
    """The explanation of ``source`` and, if a layer does not fit, its :class:`ShapeError`.

    ``source``: a Sequential, spec text, spec file, zoo name or saved model (``.npz``).
    Spec text that does not parse raises :class:`~convnet.errors.SpecError` (nothing to explain).
    """
    net, layers, error = _partial(source, input_shape)
    rows = arith.layer_rows(net, batch=1, itemsize=4) if layers else []
    spec = " ".join(str(getattr(net, "spec", "")).split())  # a spec file may span lines
    lines = [f"Network: {spec}", f"Input: {fmt_shape(net.input_shape)}"
             + (" (H x W x D: rows x columns x depth)" if len(net.input_shape) == 3 else ""), ""]
    for layer, row in zip(layers, rows, strict=True):
        lines += _layer_block(layer, row)
        lines.append("")
    if error is not None:
        bad = net.failed_layer
        lines.append(f"{bad.name}: {bad.to_spec()}   {fmt_shape(net.failed_input)} -> does not fit")
        for part in str(error).split("\n"):
            lines += _wrap(part) if part.strip() else []
        if net.remaining:
            lines += _wrap(f"The {net.remaining} layer(s) after {bad.name} cannot be derived "
                           "until this one fits.")
        return Derivation("\n".join(lines) + "\n", error)
    params = sum(r.params for r in rows)
    macs = sum(r.macs for r in rows)
    lines += _wrap(f"Total: {_n(params)} parameters; {_n(macs)} MACs per image "
                   f"(FLOPs = 2 x MACs = {_n(2 * macs)}); output {fmt_shape(net.output_shape)}.",
                   "")
    fcn = _fully_convolutional(net, rows)
    if fcn:
        lines.append("")
        for i, line in enumerate(fcn):
            lines += _wrap(line, "") if i == 0 else [line]
        if isinstance(net, Sequential) and any(r.kind in ("FC", "GAP") for r in rows):
            from convnet.fcn.explain import map_notes

            # what each map unit sees, and whether the map equals the crop-by-crop scores
            for note in map_notes(net):
                lines += _wrap(note)
    return Derivation("\n".join(lines) + "\n", None)


def explain(source: Source, input_shape: tuple[int, ...] | None = None) -> str:
    """The derivation of every layer of ``source`` in words and numbers.

    A network whose configuration does not fit is not an exception here: the text derives the
    layers that work, then shows the failing layer's formula with the numbers and what would
    fit. Use :func:`derive` to learn whether it failed (``convnet explain`` exits 2 then).

    >>> text = explain("INPUT(32x32x3) -> CONV(10,F=5,P=2)")
    >>> "(32 - 5 + 2*2)/1 + 1 = 32" in text and "760" in text
    True
    """
    return derive(source, input_shape).text


__all__ = ["Derivation", "derive", "explain"]
