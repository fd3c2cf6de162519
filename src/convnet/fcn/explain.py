"""The FC -> CONV conversion in words and numbers, for ``convnet explain`` and ``convnet convert``.

:func:`conversion_text` derives, from the shapes alone (:mod:`convnet.arith`; no weights needed):

1. each FC (and GAP) and the CONV (AVGPOOL) it becomes, with the output-size formula, the
   weight reshape and the parameter count;
2. the converted network as a spec;
3. on a larger image: the score map's size, ``(H - H0)/T + 1``, and how many crops it replaces;
4. the receptive field of each map unit (which input pixels unit ``(i, j)`` sees);
5. the zero-padding caveat: with padding, the map is *not* the crop-by-crop scores, and why.
"""

from __future__ import annotations

from collections.abc import Sequence

from convnet import arith
from convnet.arith import fmt_number, fmt_pair, fmt_shape
from convnet.errors import ConfigError, ShapeError
from convnet.net.sequential import Sequential


def _n(x: int) -> str:
    return f"{x:,}"


def _span(lo: object, hi: object) -> str:
    return f"[{fmt_number(lo)}, {fmt_number(hi)}]"  # type: ignore[arg-type]


def conversion_steps(net: Sequential) -> list[str]:
    """One sentence per FC / GAP: what it becomes and why the numbers stay the same."""
    from convnet.fcn.convert import conversion_plan

    lines = []
    for old, new in conversion_plan(net):
        sentence = old.twin_sentence(new)
        if sentence:
            lines.append(sentence)
    return lines


def _rf_text(fcn: Sequential, T: tuple[int, int]) -> str:
    rf = arith.layer_rows(fcn)[-1].rf
    (top, bottom), (left, right) = rf.box((0, 0))
    size = arith.fmt_frac_pair(rf.size)
    i = "i" if T[0] == 1 else f"{T[0]}i"
    j = "j" if T[1] == 1 else f"{T[1]}j"
    return (f"Receptive field of each map unit: {size} input pixels; unit (i, j) sees rows "
            f"{i} + {_span(top, bottom)} and cols {j} + {_span(left, right)} "
            f"(the crop at ({i}, {j}) is rows {i} + [0, {fcn.input_shape[0] - 1}], cols {j} + "
            f"[0, {fcn.input_shape[1] - 1}]).")


def padding_caveat(net: Sequential) -> str:
    """Whether the one-pass map equals the crop-by-crop scores, and why not with zero padding."""
    from convnet.fcn import maps

    fcn = maps.as_fully_convolutional(net)
    padded = maps.zero_padded_layers(net)
    H0, W0 = net.input_shape[:2]
    T = maps.total_stride(fcn)
    if not padded:
        return (f"No zero padding: map unit (i, j) equals the original network's scores on the "
                f"{H0}x{W0} crop at ({fmt_pair(T)}*i, {fmt_pair(T)}*j), exactly (up to float "
                "rounding).")
    rf = arith.layer_rows(fcn)[-1].rf
    (top, _), (left, _) = rf.box((0, 0))
    margin = max(-top, -left)
    names = ", ".join(padded) if len(padded) <= 4 else \
        f"{len(padded)} layers, {padded[0]} to {padded[-1]},"
    text = (
        f"Zero padding ({names} pad with zeros): the map is NOT exactly the "
        f"crop-by-crop scores. A {H0}x{W0} crop fed to the original network sees zeros around "
        f"its border, where the larger image has pixels: each map unit sees "
        f"{arith.fmt_frac_pair(rf.size)} pixels, {fmt_number(margin)} beyond the crop on each "
        "side, and those are the image's own pixels (zeros only at the image's border)."
    )
    i = maps.feature_layer_index(net)
    if 0 <= i < len(net.layers) - 1 and len(net.layers[i].output_shape) == 3:
        rs, cs = maps.interior_units(net)
        h, w = net.layers[i].output_shape[:2]
        inner = max(0, rs.stop - rs.start) * max(0, cs.stop - cs.start)
        if inner:
            text += (
                f" Of the {h}x{w} units of {net.layers[i].name}'s volume, which the first FC/GAP "
                f"reads, the {inner} whose receptive field lies inside the crop (rows {rs.start}.."
                f"{rs.stop - 1}, cols {cs.start}..{cs.stop - 1}) are the same both ways; the "
                f"{h * w - inner} on the border ring differ, so every score differs a little. "
                "Only at the original size (a 1x1 map) are they equal."
            )
        else:
            text += (
                f" None of the {h}x{w} units of {net.layers[i].name}'s volume, which the first "
                "FC/GAP reads, has its receptive field inside the crop: every one reads some "
                "padding, so every score differs a little. Only at the original size (a 1x1 map) "
                "are they equal."
            )
    return text


def conversion_text(net: Sequential, image_size: Sequence[int] | None = None) -> str:
    """The conversion of ``net`` step by step, the map on a larger image, each map unit's
    receptive field, and the zero-padding caveat; plain text, one paragraph per line.

    ``image_size`` ``(H, W)``: the larger image to describe (default: ``T`` 5 times larger each
    way, so a 6x6 map, as in CS231n's 224 -> 384). Weights are not needed
    (``weights=False`` networks work).

    >>> import convnet as cn
    >>> net = cn.build("INPUT(8x8x1) -> CONV(4,F=3) -> POOL -> FC(16) -> FC(3)", weights=False)
    >>> "On a 12x12x1 image: (12 - 8)/2 + 1 = 3, a 3x3x3 map" in conversion_text(net, (12, 12))
    True
    """
    from convnet.fcn import maps

    if len(net.input_shape) != 3:
        raise ConfigError("a network on a vector input has no fully convolutional form")
    has_fc = any(ly.collapses for ly in net.layers)
    fcn = maps.as_fully_convolutional(net)
    lines = []
    if has_fc:
        lines.append("FC -> CONV, step by step (the weights are the same numbers, reshaped):")
        lines += conversion_steps(net)
        lines.append(f"Converted: {fcn.spec}")
        lines.append(
            f"On the original {fmt_shape(net.input_shape)} input it outputs 1x1x"
            f"{fcn.output_shape[-1]}, the same {fcn.output_shape[-1]} scores as before."
        )
    else:
        lines.append("Already fully convolutional (no FC): it runs on any size its strides fit.")
    try:
        T = maps.total_stride(fcn)
    except ConfigError as exc:
        lines.append(str(exc))
        return "\n".join(lines) + "\n"
    H0, W0, D = net.input_shape
    hw = tuple(image_size) if image_size is not None else (H0 + 5 * T[0], W0 + 5 * T[1])
    try:
        rows, cols, K = maps.map_shape(fcn, hw)  # type: ignore[arg-type]
    except ShapeError as exc:
        lines.append(str(exc))
    else:
        formula = f"({hw[0]} - {H0})/{T[0]} + 1 = {rows}"
        if (hw[1], W0, T[1]) != (hw[0], H0, T[0]):
            formula += f" by ({hw[1]} - {W0})/{T[1]} + 1 = {cols}"
        lines.append(
            f"On a {hw[0]}x{hw[1]}x{D} image: {formula}, a {rows}x{cols}x{K} map of scores: "
            f"the {_n(rows * cols)} crops of {H0}x{W0}, {fmt_pair(T)} pixels apart, in one pass."
        )
    lines.append(_rf_text(fcn, T))
    lines.append(padding_caveat(net))
    return "\n".join(lines) + "\n"


def map_notes(net: Sequential) -> list[str]:
    """What ``convnet explain`` adds after its FC -> CONV section: the receptive field of each
    score-map unit and the zero-padding caveat. Empty for a network without a whole-pixel crop
    grid (a vector input, or DECONV upsampling past the input's resolution)."""
    from convnet.fcn import maps

    if len(net.input_shape) != 3:
        return []
    try:
        fcn = maps.as_fully_convolutional(net)
        T = maps.total_stride(fcn)
    except ConfigError:
        return []
    return [_rf_text(fcn, T), padding_caveat(net)]


__all__ = ["conversion_steps", "conversion_text", "map_notes", "padding_caveat"]
