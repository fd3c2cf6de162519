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
from convnet.net.graph import MAX_DIM, Graph, Namer
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
    with shapes set), ``inputs_of``, ``input_shape`` and ``spec``; ``error`` is the failing
    layer's ShapeError.
    """
    try:
        net = load_network(source, input_shape)
        return net, net.layers, None
    except ShapeError as exc:
        first_error = exc
    if isinstance(source, Graph) or _is_saved_model(source):
        raise first_error  # only input_shape can fail here, and it is no spec to walk through
    from convnet.net.blocks import Compiled, compile_items
    from convnet.spec.parser import make_items, parse, resolve

    text, origin = resolve(source)
    shape, specs = parse(text, origin=origin)
    if input_shape is not None:
        shape = tuple(input_shape)
    if shape is None:  # pragma: no cover - load_network raised a SpecError for that already
        raise first_error
    # the constructors accepted these arguments already (build got as far as the shapes)
    items = make_items(specs)
    placing: list[Any] = []
    namer = Namer()

    def name(layer: Any) -> None:  # named as a network names them: conv1, relu1, pool1, ...
        namer(layer)
        placing.append(layer)

    done = Compiled([], [], [])
    try:
        compile_items(items, tuple(shape), name, out=done)
    except ShapeError as exc:
        if not placing:
            raise first_error from None
        from convnet.net.blocks import flat_layers

        total = len(flat_layers(items))
        failed = SimpleNamespace(layers=done.layers, inputs_of=done.inputs_of,
                                 input_shape=tuple(shape), dtype=None, spec=text,
                                 failed_layer=placing[-1],
                                 failed_input=_input_of(placing[-1], done, shape),
                                 remaining=max(0, total - len(done.layers) - 1))
        return failed, done.layers, exc
    raise first_error  # the error was not a layer's (e.g. an input size); nothing to walk


def _input_of(layer: Any, done: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The input shape the failing layer was given (the last placed node's output)."""
    if getattr(layer, "input_shapes", None):
        return tuple(layer.input_shapes[0])
    return tuple(done.shapes[-1]) if done.shapes else tuple(shape)


# ---------------------------------------------------------------------------- wording
def _n(x: int) -> str:
    return f"{x:,}"


def _wrap(text: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_on_hyphens=False, break_long_words=False)


def _rf_sentence(row: LayerRow) -> str:
    rf = row.rf
    if rf.whole:
        return "Receptive field: every output sees the whole input."
    size, jump = fmt_frac_pair(rf.size), fmt_frac_pair(rf.jump)
    box = size if "x" in size else f"{size}x{size}"
    pixels = "pixel" if jump == "1" else "pixels"
    return (f"Receptive field: each unit sees {box} input pixels (padding included); "
            f"neighbouring units are {jump} input {pixels} apart (effective stride {jump}).")


def _layer_block(layer: Any, row: LayerRow, previous: str) -> list[str]:
    ins = (" + ".join(fmt_shape(s) for s in layer.input_shapes)
           if getattr(layer, "input_shapes", None) else fmt_shape(row.input_shape))
    head = f"{layer.name}: {row.spec}   {ins} -> {fmt_shape(row.output_shape)}"
    if row.inputs and row.inputs != (previous,):
        head += f"   (reads {', '.join(row.inputs)})"
    body = list(layer.derivation(row))
    if layer.inserted == "projection":
        body.insert(0, "Inserted by RES[...]: the main branch changes the size or depth, so the "
                       "shortcut is projected by a 1x1 CONV with the stride and K that match (and "
                       "a BN when the main branch has BN), as ResNets do.")
    if layer.slides or layer.weighted or layer.arity != 1:
        body.append(_rf_sentence(row) if layer.arity == 1 else
                    _rf_sentence(row).replace("each unit sees", "each unit sees the union of its "
                                              "inputs' windows,"))
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
    from convnet.fcn.convert import conversion_plan, to_fully_convolutional

    # the layers the conversion makes (fcn/convert.py): one rule, used here and for the weights
    plan = conversion_plan(net)
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
    shapes_only = net if not net.has_weights else type(net).__new__(type(net))
    if shapes_only is not net:   # the same network without weights: the conversion's shapes
        from convnet.spec import build

        shapes_only = build(net.spec, weights=False)
    spec = to_fully_convolutional(shapes_only).spec
    out += _wrap(f"As a spec: {spec}")
    return out + _larger_input(net, rows, spec)


def _larger_input(net: Any, rows: list[LayerRow], spec: str) -> list[str]:
    """On a larger image the converted net slides, giving a map of scores (as in CS231n: VGG on
    384x384 gives 6x6 scores)."""
    from convnet.spec import build

    # the grid of the volume the classifier starts from (before the first FC, FLATTEN or GAP)
    first = next(i for i, ly in enumerate(net.layers) if ly.collapses)
    jump = rows[first - 1].rf.jump if first else (1, 1)
    if any(j.denominator != 1 for j in jump):
        return []
    H, W, D = net.input_shape
    bigger = (H + 5 * int(jump[0]), W + 5 * int(jump[1]), D)
    if max(bigger) > MAX_DIM:        # no larger input within the size limit
        return []
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
    for i, (layer, row) in enumerate(zip(layers, rows, strict=True)):
        lines += _layer_block(layer, row, layers[i - 1].name if i else "input")
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
        if isinstance(net, Graph) and any(r.kind in ("FC", "GAP") for r in rows):
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
