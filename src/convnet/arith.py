"""Convolution arithmetic: every shape formula of the library, in one place, with no arrays.

Pure integer functions. The layers, the architecture language, ``summary``, ``explain``, the docs
and the tests all call these, so a formula is written once and cannot drift.

The conventions (CS231n; Dumoulin & Visin, "A guide to convolution arithmetic for deep learning"):

- CONV on a side of size ``W`` with spatial extent ``F``, stride ``S``, zero padding ``P`` and
  dilation ``d``: ``F_eff = F + (F - 1)(d - 1)`` and ``out = (W - F_eff + 2P)/S + 1``.
  The configuration *fits* when that is a whole number of at least 1. An input exactly the size of
  the (padded) filter gives 1 for any stride.
- POOL uses the same formula with ``d = 1``.
- Transposed CONV (DECONV): ``out = S(W - 1) + F_eff - 2P + a`` with output padding ``0 <= a < S``.

>>> conv_output_size(32, F=5, S=1, P=2)
32
>>> conv_output_size(7, F=3, S=2)
3
>>> deconv_output_size(3, F=3, S=2)
7
>>> conv_params(F=(5, 5), D=3, K=10)
760
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from convnet.errors import ConfigError, ShapeError

Pair = tuple[int, int]
Shape = tuple[int, ...]
AXES = ("rows", "cols")


# ----------------------------------------------------------------------------------- validation
def as_pair(value: int | Sequence[int], name: str, *, minimum: int = 0, where: str = "") -> Pair:
    """``3 -> (3, 3)``; ``(3, 5) -> (3, 5)``, validated as whole numbers ``>= minimum``.

    Raises :class:`ShapeError` naming the hyperparameter and the value received.
    """
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool):
        raise ShapeError(f"{prefix}{name}={value!r} must be a whole number, not a bool")
    if isinstance(value, int | float) or hasattr(value, "__index__"):
        values = (value, value)
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        values = tuple(value)
    else:
        raise ShapeError(
            f"{prefix}{name}={value!r} must be a whole number or a (rows, cols) pair"
        )
    out = []
    for v in values:
        if isinstance(v, bool) or not (
            isinstance(v, int) or (isinstance(v, float) and v.is_integer())
            or hasattr(v, "__index__")
        ):
            raise ShapeError(f"{prefix}{name}={value!r} must be a whole number, received {v!r}")
        v = int(v)
        if v < minimum:
            need = {0: "value >= 0", 1: "value > 0"}.get(minimum, f"value >= {minimum}")
            what = {
                "S": f" (stride {v} would never move the filter)" if v == 0 else "",
                "P": " (padding adds zeros; it cannot remove pixels)" if v < 0 else "",
            }.get(name, "")
            raise ShapeError(
                f"{prefix}received {name}={value!r}, including {v}, which does not satisfy "
                f"`{need}`{what}"
            )
        out.append(v)
    return out[0], out[1]


def fmt_pair(p: Pair) -> str:
    """``(3, 3) -> '3'``, ``(3, 5) -> '3x5'``: how a pair is written in specs and messages."""
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


def fmt_shape(shape: Shape) -> str:
    """``(28, 28, 1) -> '28x28x1'``; a vector ``(150,) -> '150'``."""
    return "x".join(str(int(s)) for s in shape)


def effective_extent(F: int, dilation: int = 1) -> int:
    """Spatial extent of a dilated filter: ``F + (F - 1)(d - 1)``."""
    return F + (F - 1) * (dilation - 1)


# ----------------------------------------------------------------------------------- CONV / POOL
def conv_output_exact(W: int, F: int, S: int = 1, P: int = 0, dilation: int = 1) -> Fraction:
    """``(W - F_eff + 2P)/S + 1`` as an exact fraction (not yet checked to be whole)."""
    return Fraction(W - effective_extent(F, dilation) + 2 * P, S) + 1


def conv_fits(W: int, F: int, S: int = 1, P: int = 0, dilation: int = 1) -> bool:
    """Whether the filter tiles the padded side exactly: output whole and at least 1."""
    span = W + 2 * P - effective_extent(F, dilation)
    return span >= 0 and span % S == 0


def conv_output_size(
    W: int, F: int, S: int = 1, P: int = 0, dilation: int = 1, *, floor: bool = False
) -> int:
    """Output side of a CONV or POOL layer. Raises :class:`ShapeError` if it does not fit.

    ``floor=True`` keeps PyTorch's and Keras's rule instead: the last positions where the filter
    would stick out are silently dropped (``floor((W - F_eff + 2P)/S) + 1``).
    """
    span = W + 2 * P - effective_extent(F, dilation)
    if span < 0:
        raise ShapeError(
            f"filter extent {effective_extent(F, dilation)} is larger than the padded input "
            f"{W} + 2*{P} = {W + 2 * P}"
        )
    if span % S and not floor:
        raise ShapeError(f"({W} - {effective_extent(F, dilation)} + 2*{P})/{S} + 1 is not whole")
    return span // S + 1


def strides_that_fit(W: int, F: int, P: int = 0, dilation: int = 1, limit: int = 8) -> list[int]:
    """Strides (at most ``limit`` of them, smallest first) for which the configuration fits."""
    span = W + 2 * P - effective_extent(F, dilation)
    if span < 0:
        return []
    if span == 0:
        return list(range(1, limit + 1))
    return [s for s in range(1, span + 1) if span % s == 0][:limit]


def padding_that_fits(W: int, F: int, S: int, P: int = 0, dilation: int = 1) -> int | None:
    """The smallest padding ``>= P`` that makes stride ``S`` fit, or None if none within ``S``."""
    for p in range(P, P + S + 1):
        if conv_fits(W, F, S, p, dilation):
            return p
    return None


def same_padding(F: int, dilation: int = 1) -> int | None:
    """Padding that preserves the size at stride 1: ``(F_eff - 1)/2``; None for an even extent."""
    f = effective_extent(F, dilation)
    return (f - 1) // 2 if f % 2 == 1 else None


@dataclass(frozen=True)
class Window:
    """A sliding-window layer's hyperparameters, per axis (rows, cols)."""

    F: Pair
    S: Pair = (1, 1)
    P: Pair = (0, 0)
    dilation: Pair = (1, 1)

    @property
    def extent(self) -> Pair:
        return (effective_extent(self.F[0], self.dilation[0]),
                effective_extent(self.F[1], self.dilation[1]))


def _formula(W: int, w: Window, i: int) -> str:
    f_eff = w.extent[i]
    value = conv_output_exact(W, w.F[i], w.S[i], w.P[i], w.dilation[i])
    shown = str(int(value)) if value.denominator == 1 else f"{float(value):.2f}"
    return f"({W} - {f_eff} + 2*{w.P[i]})/{w.S[i]} + 1 = {shown}"


def window_output_hw(in_hw: Pair, w: Window, *, where: str, floor: bool = False) -> Pair:
    """Output (rows, cols) of a CONV or POOL window on an ``in_hw`` input.

    ``where`` names the layer and its input for the message, e.g.
    ``"conv2 (CONV K=8 F=3 S=3 P=0) on 7x7x1"``. A configuration that does not fit raises
    :class:`ShapeError` with the formula, the numbers put in, and what would fit instead.
    """
    out = []
    square = in_hw[0] == in_hw[1] and w.F[0] == w.F[1] and w.S[0] == w.S[1] and w.P[0] == w.P[1] \
        and w.dilation[0] == w.dilation[1]
    for i in range(2):
        W, f_eff, S, P = in_hw[i], w.extent[i], w.S[i], w.P[i]
        axis = "" if square else f" along {AXES[i]}"
        if f_eff > W + 2 * P:
            dil = f" (F={w.F[i]} dilated by {w.dilation[i]})" if w.dilation[i] > 1 else ""
            fix_p = math.ceil((f_eff - W) / 2)
            raise ShapeError(
                f"{where}: the filter extent {f_eff}{dil}{axis} is larger than the padded input "
                f"{W} + 2*{P} = {W + 2 * P}: {_formula(W, w, i)} is less than 1. Use a filter of "
                f"at most {W + 2 * P}, or pad P={fix_p}."
            )
        if (W + 2 * P - f_eff) % S:
            if floor:
                out.append((W + 2 * P - f_eff) // S + 1)
                continue
            fits = strides_that_fit(W, w.F[i], P, w.dilation[i])
            strides = ", ".join(str(s) for s in fits)
            msg = (
                f"{where}: {_formula(W, w, i)} is not a whole number{axis}: stride {S} does not "
                f"fit. Strides that fit: {strides}."
            )
            p_fix = padding_that_fits(W, w.F[i], S, P, w.dilation[i])
            if p_fix is not None:
                size = conv_output_size(W, w.F[i], S, p_fix, w.dilation[i])
                other = conv_output_size(in_hw[1 - i], w.F[1 - i], w.S[1 - i], p_fix,
                                         w.dilation[1 - i], floor=True) if square else None
                shape = f"{size}x{other}" if other is not None else f"{size}{axis}"
                msg += f" Or pad P={p_fix} with S={S} -> {shape}."
            floored = (W + 2 * P - f_eff) // S + 1
            msg += f" (floor=True would crop like PyTorch and Keras: {floored}{axis}.)"
            raise ShapeError(msg)
        out.append((W + 2 * P - f_eff) // S + 1)
    return out[0], out[1]


def window_formula(in_hw: Pair, w: Window) -> list[str]:
    """The output-size formula with the numbers put in, one line per distinct axis."""
    lines = [_formula(in_hw[0], w, 0)]
    if (in_hw[0], w.F[0], w.S[0], w.P[0], w.dilation[0]) != (
        in_hw[1], w.F[1], w.S[1], w.P[1], w.dilation[1]
    ):
        lines.append(_formula(in_hw[1], w, 1))
    return lines


# ------------------------------------------------------------------------------------- DECONV
def deconv_output_size(
    W: int, F: int, S: int = 1, P: int = 0, output_padding: int = 0, dilation: int = 1
) -> int:
    """Transposed CONV output side: ``S(W - 1) + F_eff - 2P + a``."""
    return S * (W - 1) + effective_extent(F, dilation) - 2 * P + output_padding


def deconv_output_hw(
    in_hw: Pair, w: Window, output_padding: Pair, *, where: str
) -> Pair:
    """Output (rows, cols) of a transposed CONV; :class:`ShapeError` if ``a >= S`` or out < 1."""
    out = []
    for i in range(2):
        a, S = output_padding[i], w.S[i]
        if not 0 <= a < max(S, w.dilation[i]):
            raise ShapeError(
                f"{where}: output_padding={a} must be smaller than the stride S={S}: it only "
                f"chooses among the {S} input sizes that a stride-{S} CONV maps to the same output"
            )
        size = deconv_output_size(in_hw[i], w.F[i], S, w.P[i], a, w.dilation[i])
        if size < 1:
            raise ShapeError(
                f"{where}: {S}*({in_hw[i]} - 1) + {w.extent[i]} - 2*{w.P[i]} + {a} = {size} is "
                f"less than 1: the padding P={w.P[i]} crops away the whole output"
            )
        out.append(size)
    return out[0], out[1]


def deconv_output_padding_for(W: int, target: int, F: int, S: int, P: int = 0,
                              dilation: int = 1) -> int:
    """The output padding ``a`` that makes a transposed CONV produce ``target``; ConfigError if
    no ``0 <= a < S`` does (valid targets range from ``a = 0`` to ``a = S - 1``)."""
    base = deconv_output_size(W, F, S, P, 0, dilation)
    a = target - base
    if not 0 <= a < S:
        raise ConfigError(
            f"requested an output size of {target}, but valid sizes range from {base} to "
            f"{base + S - 1}"
        )
    return a


# ---------------------------------------------------------------------------- counts and costs
def conv_params(F: Pair | int, D: int, K: int, bias: bool = True) -> int:
    """CONV parameters with sharing: ``(F*F*D)*K`` weights plus ``K`` biases."""
    fh, fw = (F, F) if isinstance(F, int) else F
    return fh * fw * D * K + (K if bias else 0)


def conv_params_unshared(out_hw: Pair, F: Pair | int, D: int, K: int, bias: bool = True) -> int:
    """What the same layer would need if every output unit had its own weights (no sharing)."""
    return out_hw[0] * out_hw[1] * conv_params(F, D, K, bias)


def fc_params(n_in: int, K: int, bias: bool = True) -> int:
    """FC parameters: ``n_in*K`` weights plus ``K`` biases."""
    return n_in * K + (K if bias else 0)


def conv_macs(out_hw: Pair, F: Pair | int, D: int, K: int) -> int:
    """Multiply-accumulates of a CONV: one ``F*F*D`` dot product per output unit."""
    fh, fw = (F, F) if isinstance(F, int) else F
    return out_hw[0] * out_hw[1] * K * fh * fw * D


def deconv_macs(in_hw: Pair, F: Pair | int, D: int, K: int) -> int:
    """Multiply-accumulates of a transposed CONV: every input unit scatters an ``F*F*K`` patch."""
    fh, fw = (F, F) if isinstance(F, int) else F
    return in_hw[0] * in_hw[1] * D * fh * fw * K


def fc_macs(n_in: int, K: int) -> int:
    return n_in * K


def num_elements(shape: Shape) -> int:
    return math.prod(int(s) for s in shape)


def activation_bytes(shape: Shape, batch: int = 1, itemsize: int = 4) -> int:
    """Bytes to hold one activation volume for ``batch`` images (float32 by default)."""
    return num_elements(shape) * batch * itemsize


# --------------------------------------------------------------------------- receptive fields
FracPair = tuple[Fraction, Fraction]


@dataclass(frozen=True)
class ReceptiveField:
    """What one unit of a layer sees of the network's input, per axis (rows, cols).

    - ``size``: the receptive field's extent in input pixels (padding included, so it can exceed
      the image near the border or for deep stacks). Fractional only after a transposed CONV.
    - ``jump``: the effective stride, how many input pixels apart two neighbouring units' centres
      are (``1/S`` after a stride-``S`` DECONV).
    - ``start``: where the centre of the first unit (index 0) falls on the input, in input pixel
      coordinates (negative when padding shifts it off the image).

    Unit ``i`` is centred at ``start + i*jump`` and covers ``centre +/- (size - 1)/2``.
    ``whole`` is True once every unit sees the whole input (after an FC or a GAP).
    """

    size: FracPair = (Fraction(1), Fraction(1))
    jump: FracPair = (Fraction(1), Fraction(1))
    start: FracPair = (Fraction(0), Fraction(0))
    whole: bool = False

    def box(self, index: Pair) -> tuple[FracPair, FracPair]:
        """``((top, bottom), (left, right))``: the input pixels (inclusive, unclipped) that unit
        ``index = (row, col)`` can see. Every input pixel that influences the unit lies inside.

        >>> ReceptiveField().box((2, 3))
        ((Fraction(2, 1), Fraction(2, 1)), (Fraction(3, 1), Fraction(3, 1)))
        """
        out = []
        for i in range(2):
            centre = self.start[i] + index[i] * self.jump[i]
            half = (self.size[i] - 1) / 2
            out.append((centre - half, centre + half))
        return out[0], out[1]


def receptive_field_step(rf: ReceptiveField, window: Window | None,
                         transposed: bool = False) -> ReceptiveField:
    """The receptive field after one more layer, from the one before it.

    ``window`` is the layer's sliding window (None for a layer that acts on each unit alone:
    activations, BN, DROPOUT, FLATTEN). Per axis, with ``F_eff`` the dilated extent:

    - CONV / POOL: ``jump_out = jump_in*S``, ``size_out = size_in + (F_eff - 1)*jump_in``,
      ``start_out = start_in + ((F_eff - 1)/2 - P)*jump_in``.
    - DECONV (transposed): the stride divides, ``jump_out = jump_in/S``; an output unit sees the
      input units within ``(F_eff - 1)/(2S)`` of its centre, so
      ``size_out = size_in + (F_eff - 1)*jump_out`` and
      ``start_out = start_in - ((F_eff - 1)/2 - P)*jump_out``.

    >>> rf = receptive_field_step(ReceptiveField(), Window(F=(3, 3)))
    >>> [int(v) for v in rf.size], [int(v) for v in rf.jump], [int(v) for v in rf.start]
    ([3, 3], [1, 1], [1, 1])
    """
    if window is None:
        return rf
    size, jump, start = [], [], []
    for i in range(2):
        f1 = window.extent[i] - 1
        if transposed:
            j = rf.jump[i] / window.S[i]
            size.append(rf.size[i] + f1 * j)
            start.append(rf.start[i] - (Fraction(f1, 2) - window.P[i]) * j)
        else:
            j = rf.jump[i] * window.S[i]
            size.append(rf.size[i] + f1 * rf.jump[i])
            start.append(rf.start[i] + (Fraction(f1, 2) - window.P[i]) * rf.jump[i])
        jump.append(j)
    return ReceptiveField((size[0], size[1]), (jump[0], jump[1]), (start[0], start[1]), rf.whole)


def union_receptive_field(rfs: Sequence[ReceptiveField]) -> ReceptiveField:
    """The receptive field of a unit that merges units at the same position of several inputs
    (an ADD or CAT of branches): per axis, the smallest window that holds all of theirs.

    The branches of a merge share their spatial grid, so their jumps agree; where they do not
    (a branch on another grid), the largest jump is kept and the box is exact for unit 0 only.

    >>> a = ReceptiveField((Fraction(5), Fraction(5)), (Fraction(2), Fraction(2)),
    ...                    (Fraction(2), Fraction(2)))
    >>> b = ReceptiveField((Fraction(1), Fraction(1)), (Fraction(2), Fraction(2)),
    ...                    (Fraction(0), Fraction(0)))
    >>> u = union_receptive_field([a, b])
    >>> [str(v) for v in u.size], [str(v) for v in u.start]
    (['5', '5'], ['2', '2'])
    """
    if any(r.whole for r in rfs):
        whole = next(r for r in rfs if r.whole)
        return whole
    size, jump, start = [], [], []
    for i in range(2):
        lo = min(r.start[i] - (r.size[i] - 1) / 2 for r in rfs)
        hi = max(r.start[i] + (r.size[i] - 1) / 2 for r in rfs)
        size.append(hi - lo + 1)
        start.append((lo + hi) / 2)
        jump.append(max(r.jump[i] for r in rfs))
    return ReceptiveField((size[0], size[1]), (jump[0], jump[1]), (start[0], start[1]))


def receptive_fields(windows: Sequence[Window | None],
                     transposed: Sequence[bool] | None = None) -> list[ReceptiveField]:
    """The receptive field of every layer of a stack (one per entry of ``windows``).

    ``transposed[i]`` marks a DECONV. An FC on an ``H x W`` volume is, for this purpose, a
    window ``F = H x W`` (it sees everything), as is a GAP.

    >>> rfs = receptive_fields([Window(F=(3, 3)), Window(F=(2, 2), S=(2, 2)), Window(F=(3, 3))])
    >>> [(int(r.size[0]), int(r.jump[0])) for r in rfs]
    [(3, 1), (4, 2), (8, 2)]
    """
    flags = list(transposed) if transposed is not None else [False] * len(windows)
    rf, out = ReceptiveField(), []
    for window, t in zip(windows, flags, strict=True):
        rf = receptive_field_step(rf, window, t)
        out.append(rf)
    return out


def fmt_number(x: Fraction | int) -> str:
    """``Fraction(4) -> '4'``, ``Fraction(1, 2) -> '0.5'``, ``Fraction(1, 3) -> '0.333'``."""
    x = Fraction(x)
    return str(x.numerator) if x.denominator == 1 else f"{float(x):.3g}"


def fmt_frac_pair(p: FracPair) -> str:
    """Like :func:`fmt_pair` for receptive-field numbers: ``'11'``, ``'3x5'``, ``'0.5'``."""
    a, b = fmt_number(p[0]), fmt_number(p[1])
    return a if a == b else f"{a}x{b}"


# ------------------------------------------------------------------------------- memory
def training_memory(num_params: int, activation_elements: int, batch: int = 1,
                    itemsize: int = 4, optimizer_slots: int = 0) -> dict[str, int]:
    """Bytes a training step holds, by part.

    - ``params`` and ``grads``: one value each per parameter.
    - ``optimizer``: ``optimizer_slots`` more per parameter (SGD 0, momentum 1, Adam 2).
    - ``activations``: ``activation_elements`` per image (the input and every layer's output,
      which backward needs) times ``batch``.

    Workspaces of a particular implementation (im2col matrices) are not counted.

    >>> training_memory(760, 32 * 32 * 13, batch=2)
    {'params': 3040, 'grads': 3040, 'optimizer': 0, 'activations': 106496, 'total': 112576}
    """
    parts = {
        "params": num_params * itemsize,
        "grads": num_params * itemsize,
        "optimizer": optimizer_slots * num_params * itemsize,
        "activations": activation_elements * batch * itemsize,
    }
    parts["total"] = sum(parts.values())
    return parts


def fmt_bytes(n: int) -> str:
    """``1536 -> '1.5 KiB'``: binary units, three significant digits (no exponent).

    >>> fmt_bytes(1536), fmt_bytes(1023), fmt_bytes(1047552), fmt_bytes(138357544 * 4)
    ('1.5 KiB', '1023 B', '1023 KiB', '528 MiB')
    """
    value = float(n)
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    for i, unit in enumerate(units):
        if unit == "B" and abs(value) < 1024:
            return f"{int(value)} B"
        text = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        if float(text) < 1024 or i == len(units) - 1:
            return f"{text} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


# -------------------------------------------------------------------------- per-layer rows
@dataclass(frozen=True)
class LayerRow:
    """One layer's numbers, from the shapes alone (see :func:`layer_rows`).

    ``inputs`` names where the layer's inputs come from (``"input"`` for the network's input);
    a merge (ADD, CAT) has two or more, and ``input_shape`` is then its first input's."""

    name: str
    kind: str
    spec: str
    input_shape: Shape
    output_shape: Shape
    params: int
    macs: int
    rf: ReceptiveField
    activation_bytes: int
    inputs: tuple[str, ...] = ()


def layer_macs(layer: object) -> int:
    """Multiply-accumulates of one layer for one image, from its shapes (the layer's own
    ``macs()``: CONV, DECONV and FC count theirs; pooling, activations, BN and DROPOUT do a
    handful of comparisons or additions per element and are reported as 0, as torchinfo and
    most papers do). FLOPs are ``2 x MACs``."""
    return int(layer.macs())  # type: ignore[attr-defined]


def layer_rows(net: object, batch: int = 1, itemsize: int | None = None) -> list[LayerRow]:
    """Every layer's numbers for a network whose shapes are inferred (weights not needed).

    ``net`` is a :class:`~convnet.net.graph.Graph` or :class:`~convnet.net.sequential.Sequential`
    (or anything with ``layers`` and ``input_shape`` whose layers have ``input_shape`` and
    ``output_shape`` set, and optionally ``inputs_of``: each layer's input indices, -1 for the
    network's input; a chain without it). ``itemsize`` defaults to the network's dtype (4 for
    float32). The receptive field is carried through each layer's own ``receptive_field``: an FC
    after an ``H x W`` volume (directly or after FLATTEN) or a GAP sees the whole input, and a
    merge sees the union of its inputs' windows.

    Shape:
        One :class:`LayerRow` per layer, in order; ``activation_bytes`` is the layer's output
        volume for ``batch`` images.
    """
    if itemsize is None:
        itemsize = int(getattr(getattr(net, "dtype", None), "itemsize", 4) or 4)
    input_shape = tuple(net.input_shape)  # type: ignore[attr-defined]
    layers = list(net.layers)  # type: ignore[attr-defined]
    inputs_of = getattr(net, "inputs_of", None) or [(i - 1,) for i in range(len(layers))]
    # per node: its receptive field and the spatial grid its output lies on (a vector remembers
    # the volume it was flattened from; None: a network of vectors has no grid at all)
    start_grid: Pair | None = (input_shape[0], input_shape[1]) if len(input_shape) == 3 else None
    state: dict[int, tuple[ReceptiveField, Pair | None]] = {-1: (ReceptiveField(), start_grid)}
    names = {-1: "input", **{i: ly.name for i, ly in enumerate(layers)}}
    rows = []
    for i, layer in enumerate(layers):
        srcs = inputs_of[i]
        ins, outs = tuple(layer.input_shape), tuple(layer.output_shape)
        if len(srcs) > 1:
            rf = layer.merge_receptive_field([state[k][0] for k in srcs])
            grid = state[srcs[0]][1]
        else:
            rf_in, grid_in = state[srcs[0]]
            grid = (ins[0], ins[1]) if len(ins) == 3 else grid_in
            rf = layer.receptive_field(rf_in, grid)
        if len(outs) == 3:
            grid = (outs[0], outs[1])
        elif rf.whole and grid is not None:
            grid = (1, 1)
        state[i] = (rf, grid)
        rows.append(LayerRow(
            name=layer.name, kind=layer.kind, spec=layer.to_spec(), input_shape=ins,
            output_shape=outs, params=int(layer.count_params()), macs=layer_macs(layer), rf=rf,
            activation_bytes=activation_bytes(outs, batch, itemsize),
            inputs=tuple(names[k] for k in srcs),
        ))
    return rows


__all__ = [
    "Window", "as_pair", "activation_bytes", "conv_fits", "conv_macs", "conv_output_exact",
    "conv_output_size", "conv_params", "conv_params_unshared", "deconv_macs",
    "deconv_output_hw", "deconv_output_padding_for", "deconv_output_size", "effective_extent",
    "fc_macs", "fc_params", "fmt_pair", "fmt_shape", "num_elements", "padding_that_fits",
    "same_padding", "strides_that_fit", "window_formula", "window_output_hw",
    "LayerRow", "ReceptiveField", "fmt_bytes", "fmt_frac_pair", "fmt_number", "layer_macs",
    "layer_rows", "receptive_field_step", "receptive_fields", "training_memory",
    "union_receptive_field",
]
