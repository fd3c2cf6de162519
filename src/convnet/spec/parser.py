"""The architecture language of the seeds: text -> layers -> a network (:class:`Sequential`,
or :class:`Graph` for RES[...] and CAT[...] blocks).

::

    INPUT(32x32x3) -> [[CONV(16,F=3,P=1) -> RELU]*2 -> POOL]*3 -> [FC(64) -> RELU]*1 -> FC(10)

Grammar (a hand-written tokenizer and a recursive-descent parser; no ``eval``, no regex soup)::

    spec   := [input "->"] chain EOF          # input first, unless build() gets input_shape
    input  := INPUT "(" dims ")" | INPUT dims  # INPUT(28x28x1), INPUT(64), INPUT(28,28,1)
    chain  := item ("->" item)*               # "->" or "→"
    item   := layer | "[" chain "]" "*" N     # N >= 0 whole; *0 leaves the group out
            | RES "[" chain ["|" chain] "]"   # residual: main(x) + x, or main(x) + shortcut(x)
            | CAT "[" chain ("|" chain)+ "]"  # branches stacked along depth
    layer  := NAME ["(" [arg ("," arg)*] ")"]
    arg    := value | NAME "=" value          # positional first, in the seeds' order (K, F, S, P)
    value  := INT | FLOAT | HxW | "(" INT "," INT ")" | true | false

``RES[main]`` adds the block's input to the main branch's output; where the main branch changes
the size or depth, a projection (a 1x1 CONV with the matching stride and K, then a BN when the
main branch has one) is inserted on the shortcut, and ``net.spec`` writes it out. Blocks nest,
and repeat like any item: ``[RES[CONV(64,F=3,P=1) -> BN -> RELU -> CONV(64,F=3,P=1) -> BN] ->
RELU]*2``.

The layers, their arguments and their defaults are read from the layer classes themselves
(:data:`convnet.layers.LAYER_CLASSES`: each class's ``kind``, constructor signature,
``positional`` order, ``aliases``); adding a layer class adds it to the language.

Names of layers and arguments are case-insensitive; whitespace and newlines go anywhere and ``#``
starts a comment that runs to the end of the line (handy in spec files).

Whatever the text, :func:`parse` and :func:`build` return a result or raise ONE
:class:`~convnet.errors.SpecError` whose message shows the offending line with a caret under the
column and says what was expected there (the valid layer names or that layer's arguments, with a
did-you-mean). Bad values that a layer constructor rejects (stride 0, a dropout ``p`` of 1.5) are
re-raised as :class:`SpecError` at that layer, carrying the constructor's message. A configuration
whose *shapes* do not work (a stride that does not fit its input) stays a
:class:`~convnet.errors.ShapeError`, raised by :class:`Sequential` naming the layer, with the
offending spec line and caret appended.

Sizes are capped so that no text can make the parser allocate without bound: a whole number is at
most ``MAX_SIZE``, a spec at most ``MAX_LAYERS`` layers after repetition, brackets nest at most
``MAX_DEPTH`` deep.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convnet.arith import fmt_shape
from convnet.errors import ConfigError, ConvnetError, ShapeError, SpecError
from convnet.layers import LAYER_CLASSES, Layer, SpecArg
from convnet.net.blocks import MAX_DIM

if TYPE_CHECKING:
    from convnet.net.graph import Graph

MAX_SIZE = MAX_DIM          # largest whole number accepted anywhere (sizes, K, F, S, P, N)
MAX_LAYERS = 10_000         # layers after expanding every [...]*N
MAX_DEPTH = 32              # nesting of [ ... ]
MAX_TEXT = 1_000_000        # characters of spec text


# ------------------------------------------------------------------------------ layer table
@dataclass(frozen=True)
class _LayerDef:
    """A layer of the language, as its class describes itself."""

    name: str                          # canonical spelling: CONV, DECONV, POOL, ...
    cls: str                           # class name in convnet.layers
    args: tuple[SpecArg, ...] = ()
    positional: tuple[str, ...] = ()   # the seeds' order
    required: tuple[str, ...] = ()
    purpose: str = ""
    example: str = ""

    def arg(self, name: str) -> SpecArg | None:
        low = name.lower()
        return next((a for a in self.args if a.name.lower() == low or a.keyword.lower() == low),
                    None)

    @property
    def signature(self) -> str:
        if not self.args:
            return f"{self.name} (takes no arguments)"
        parts = [a.name if a.required else f"{a.name}={a.default}" for a in self.args]
        return f"{self.name}({', '.join(parts)})"


def _layer_def(cls: type[Layer]) -> _LayerDef:
    args = cls.spec_args()
    return _LayerDef(cls.kind, cls.__name__, args, tuple(cls.positional),
                     tuple(a.name for a in args if a.required), cls.purpose,
                     cls.example or (cls.kind if not args else ""))


def _reading_order(cls: type[Layer]) -> int:
    """Where a layer comes in lists of names, from what it says of itself: windows with weights
    (CONV, DECONV), other windows (POOL), other weights (FC), reshapes (FLATTEN), activations,
    the rest (DROPOUT, BN)."""
    window = cls.slides
    if cls.weighted:
        return 0 if window else 2
    if window:
        return 1
    if cls.fixed_size:
        return 3
    return 4 if cls.activation is not None else 5


#: every layer of the language by canonical name (merge layers are written as blocks)
LAYERS: dict[str, _LayerDef] = {
    kind: _layer_def(cls) for kind, cls in
    sorted(LAYER_CLASSES.items(), key=lambda kv: _reading_order(kv[1])) if cls.arity == 1
}
#: the words that open a block: RES[...] and CAT[...]
BLOCKS = ("RES", "CAT")
_ALIASES = {alias: cls.kind for cls in LAYER_CLASSES.values() for alias in cls.aliases
            if cls.arity == 1}
# Names from other libraries that people will type; a hint beats a bare "unknown".
_HINTS = {foreign: cls.kind for cls in LAYER_CLASSES.values() for foreign in cls.foreign_names
          if cls.arity == 1}
_HINTS.update({"ADD": "RES[...]", "SUM": "RES[...]", "CONCAT": "CAT[...]",
               "CONCATENATE": "CAT[...]", "RESIDUAL": "RES[...]"})
# Argument names from other libraries -> the seeds' letters.
_ARG_HINTS = {
    "filters": "K", "out_channels": "K", "num_filters": "K", "units": "K", "out_features": "K",
    "kernel_size": "F", "kernel": "F", "size": "F", "pool_size": "F", "extent": "F",
    "stride": "S", "strides": "S", "padding": "P", "pad": "P", "rate": "p", "drop": "p",
    "negative_slope": "alpha", "slope": "alpha", "use_bias": "bias", "ceil_mode": "floor",
    "group": "G", "depth_multiplier": "multiplier",
}
_ALL_NAMES = ["INPUT", *LAYERS, *BLOCKS]
_NAME_LIST = ", ".join(_ALL_NAMES)


def layer_names() -> list[str]:
    """Every layer name of the language, canonical spelling (aliases excluded), and the block
    words RES and CAT."""
    return list(_ALL_NAMES)


@dataclass(frozen=True)
class LayerSpec:
    """One parsed layer: its canonical ``kind`` ("CONV"), constructor ``kwargs``, and where it
    was written (1-based ``line`` and ``column``)."""

    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    column: int = 1
    line: int = 1
    # offsets in the text of the layer name and of each argument's value, for error carets
    offset: int = field(default=0, compare=False, repr=False)
    arg_offsets: dict[str, int] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class BlockSpec:
    """One parsed block: ``kind`` "RES" or "CAT", its ``branches`` (lists of LayerSpec and
    BlockSpec), and where it was written."""

    kind: str
    branches: tuple[tuple[Any, ...], ...]
    column: int = 1
    line: int = 1
    offset: int = field(default=0, compare=False, repr=False)

    @property
    def size(self) -> int:
        """Layers the block holds (its merge included)."""
        return 1 + sum(s.size if isinstance(s, BlockSpec) else 1
                       for branch in self.branches for s in branch)


# --------------------------------------------------------------------------------- tokenizer
@dataclass(frozen=True)
class _Tok:
    kind: str     # NAME INT FLOAT DIMS ( ) [ ] * , = | -> EOF
    text: str
    pos: int      # offset in the text


_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_DIMS = re.compile(r"[0-9]+(?:[ \t]*[xX×][ \t]*[0-9]+)+", re.ASCII)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_PUNCT = {"(": "(", ")": ")", "[": "[", "]": "]", "*": "*", ",": ",", "=": "=", "→": "->",
          "|": "|"}


class _Source:
    """The text being parsed, able to point at an offset in it."""

    def __init__(self, text: str, origin: str = "") -> None:
        self.text = text
        self.origin = origin

    def where(self, pos: int) -> tuple[int, int]:
        """1-based (line, column) of an offset."""
        pos = max(0, min(pos, len(self.text)))
        line = self.text.count("\n", 0, pos) + 1
        start = self.text.rfind("\n", 0, pos) + 1
        return line, pos - start + 1

    def caret(self, pos: int) -> str:
        """The line holding ``pos`` and a caret under it, cropped to a readable width."""
        pos = max(0, min(pos, len(self.text)))
        start = self.text.rfind("\n", 0, pos) + 1
        end = self.text.find("\n", pos)
        end = len(self.text) if end < 0 else end
        col = pos - start
        lo, hi = max(0, col - 50), col + 50
        shown = self.text[start:end][lo:hi]
        # One display cell per character keeps the caret aligned: tabs and control characters
        # become single placeholders.
        shown = "".join(c if c.isprintable() else ("" if c == "\r" else " " if c == "\t" else "?")
                        for c in shown)
        prefix = "..." if lo > 0 else ""
        suffix = "..." if end - start > hi else ""
        return f"  {prefix}{shown}{suffix}\n  {' ' * (len(prefix) + col - lo)}^"

    def error(self, pos: int, problem: str, expected: str = "", cls: type = SpecError) -> Exception:
        """``cls`` (SpecError by default) whose message is ``problem at column C``, the line with
        a caret under the column, then ``expected``. ``.line`` and ``.column`` are set on it."""
        line, col = self.where(pos)
        at = f"line {line}, column {col}" if "\n" in self.text.rstrip("\n") else f"column {col}"
        if self.origin:
            at = f"{self.origin}, {at}"
        # A long message (a ShapeError's derivation) reads better with the place on its own line.
        sep = "\n" if len(problem) > 80 else " "
        msg = f"{problem}{sep}at {at}:\n{self.caret(pos)}"
        if expected:
            msg += f"\n{expected}"
        err = cls(msg)
        err.line, err.column = line, col  # type: ignore[attr-defined]
        return err


def _describe(tok: _Tok) -> str:
    if tok.kind == "EOF":
        return "the end of the spec"
    if tok.kind == "->":
        return "'->'"
    return f"{tok.text!r}"


def tokenize(text: str, source: _Source | None = None) -> list[_Tok]:
    """Split spec text into tokens; :class:`SpecError` at the first character that is not one."""
    src = source or _Source(text)
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("->", i):
            toks.append(_Tok("->", "->", i))
            i += 2
        elif c in _PUNCT:
            toks.append(_Tok(_PUNCT[c], c, i))
            i += 1
        elif (m := _DIMS.match(text, i)) and not _NUMBER_AFTER_DIMS.match(text, m.end()):
            toks.append(_Tok("DIMS", m.group(), i))
            i = m.end()
        elif (m := _NUMBER.match(text, i)) and any(ch.isdigit() for ch in m.group()):
            kind = "INT" if re.fullmatch(r"[+-]?[0-9]+", m.group()) else "FLOAT"
            toks.append(_Tok(kind, m.group(), i))
            i = m.end()
        elif m := _NAME.match(text, i):
            toks.append(_Tok("NAME", m.group(), i))
            i = m.end()
        elif c == "?":
            raise src.error(i, "'?' marks an optional layer in the seeds' pattern "
                            "(INPUT -> [[CONV -> RELU]*N -> POOL?]*M)",
                            "a concrete spec says yes or no: write the layer to keep it, or "
                            "leave it out")
        elif c == "-":
            raise src.error(i, "'-' alone is not an arrow", "layers are joined by '->'")
        else:
            shown = repr(c) if c.isprintable() else f"U+{ord(c):04X}"
            raise src.error(i, f"unexpected character {shown}",
                            "expected a layer NAME(args), '->', '[', ']', '*N', ',', '=', '|' or "
                            "a number; '#' starts a comment")
    toks.append(_Tok("EOF", "", n))
    return toks


# "3x5.5" or "3x5e2" must not become the pair 3x5 followed by junk: let the number rule complain.
_NUMBER_AFTER_DIMS = re.compile(r"[.eE0-9]", re.ASCII)


# ------------------------------------------------------------------------------------ parser
class _Parser:
    def __init__(self, src: _Source) -> None:
        self.src = src
        self.toks = tokenize(src.text, src)
        self.i = 0
        self.depth = 0
        self.count = 0  # layers emitted so far (after expansion), capped at MAX_LAYERS

    # -- helpers
    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        if t.kind != "EOF":
            self.i += 1
        return t

    def error(self, tok: _Tok | int, problem: str, expected: str = "") -> SpecError:
        pos = tok if isinstance(tok, int) else tok.pos
        return self.src.error(pos, problem, expected)  # type: ignore[return-value]

    def expect(self, kind: str, what: str, context: str = "") -> _Tok:
        if self.tok.kind != kind:
            raise self.error(self.tok, f"expected {what}, found {_describe(self.tok)}", context)
        return self.take()

    def whole(self, tok: _Tok, what: str) -> int:
        """An INT token as an int in ``[-MAX_SIZE, MAX_SIZE]``."""
        digits = tok.text.lstrip("+-")
        # len check first: int() of a 5000-digit string raises, and 10**100 filters are a typo.
        if len(digits.lstrip("0")) > len(str(MAX_SIZE)) or abs(int(tok.text)) > MAX_SIZE:
            raise self.error(tok, f"{what} {tok.text[:20]}{'...' if len(tok.text) > 20 else ''}"
                             f" is too large", f"whole numbers in a spec are at most {MAX_SIZE:,}")
        return int(tok.text)

    # -- grammar
    def parse(self) -> tuple[tuple[int, ...] | None, list[LayerSpec]]:
        input_shape = None
        if self.tok.kind == "EOF":
            raise SpecError("the spec is empty (or only comments): expected e.g. "
                            "INPUT(28x28x1) -> CONV(32,F=3,P=1) -> RELU -> POOL -> FC(10)")
        if self.tok.kind == "NAME" and self.tok.text.upper() == "INPUT":
            input_shape = self.parse_input()
            if self.tok.kind == "EOF":
                raise self.error(self.tok, "the spec has an INPUT but no layers",
                                 "expected '->' and a layer, e.g. INPUT(28x28x1) -> FC(10)")
            self.expect("->", "'->' after INPUT", "layers are joined by '->'")
        layers = self.parse_chain()
        if self.tok.kind != "EOF":
            t = self.tok
            if t.kind == "]":
                raise self.error(t, "']' closes a '[' that was never opened")
            if t.kind in ("NAME", "["):
                raise self.error(t, f"expected '->' before {_describe(t)}",
                                 "layers are joined by '->'")
            raise self.error(t, f"unexpected {_describe(t)}",
                             "expected '->' and another layer, or the end of the spec")
        return input_shape, layers

    def parse_input(self) -> tuple[int, ...]:
        self.take()  # INPUT
        usage = "expected a shape: INPUT(HxWxD) for images, e.g. INPUT(28x28x1), or INPUT(n)"
        closing = False
        if self.tok.kind == "(":
            self.take()
            closing = True
        elif self.tok.kind not in ("DIMS", "INT"):
            raise self.error(self.tok, f"INPUT needs a shape, found {_describe(self.tok)}", usage)
        dims: list[tuple[int, _Tok]] = []
        t = self.tok
        if t.kind == "DIMS":
            self.take()
            dims = [(int(p), t) if len(p) <= 7 else (MAX_SIZE + 1, t)
                    for p in re.split(r"[xX×]", t.text.replace(" ", "").replace("\t", ""))]
        elif t.kind == "INT":
            dims.append((self.whole(self.take(), "INPUT size"), t))
            while closing and self.tok.kind == ",":
                self.take()
                d = self.expect("INT", "a whole number", usage)
                dims.append((self.whole(d, "INPUT size"), d))
        else:
            raise self.error(t, f"INPUT needs a shape, found {_describe(t)}", usage)
        if closing:
            self.expect(")", "')' to close INPUT(", usage)
        for d, tok in dims:
            if not 1 <= d <= MAX_SIZE:
                raise self.error(tok, f"INPUT size {d} is out of range",
                                 f"every size must be between 1 and {MAX_SIZE:,}")
        if len(dims) == 2:
            h, w = dims[0][0], dims[1][0]
            raise self.error(t, f"INPUT({h}x{w}) has no depth",
                             f"write INPUT({h}x{w}x1) for one channel, INPUT({h}x{w}x3) for RGB")
        if len(dims) not in (1, 3):
            raise self.error(t, f"INPUT has {len(dims)} sizes", usage)
        return tuple(d for d, _ in dims)

    def parse_chain(self) -> list[Any]:
        out = self.parse_item()
        while self.tok.kind == "->":
            self.take()
            if self.tok.kind in ("EOF", "]", "->", "|"):
                raise self.error(self.tok, f"expected a layer after '->', found "
                                 f"{_describe(self.tok)}", f"layer names: {_NAME_LIST}")
            out += self.parse_item()
        return out

    def parse_item(self) -> list[Any]:
        t = self.tok
        if t.kind == "[":
            return self.parse_group()
        if t.kind == "NAME" and t.text.upper() in BLOCKS and self.toks[self.i + 1].kind == "[":
            return [self.parse_block()]
        if t.kind == "NAME" and t.text.upper() in BLOCKS:
            raise self.error(self.toks[self.i + 1], f"expected '[' after {t.text.upper()}",
                             _BLOCK_USAGE[t.text.upper()])
        if t.kind == "NAME":
            layer = self.parse_layer()
            self.count += 1
            self._check_count(t)
            return [layer]
        raise self.error(t, f"expected a layer, found {_describe(t)}",
                         f"layer names: {_NAME_LIST}; or '[' to start a repeated group")

    def _check_count(self, tok: _Tok) -> None:
        if self.count > MAX_LAYERS:
            raise self.error(tok, f"this spec expands to more than {MAX_LAYERS:,} layers",
                             "lower the repetition counts [...]*N")

    def parse_block(self) -> BlockSpec:
        """``RES[main]``, ``RES[main | shortcut]`` or ``CAT[b1 | b2 | ...]``."""
        word = self.take()
        kind = word.text.upper()
        line, col = self.src.where(word.pos)
        open_ = self.take()  # "[": parse_item checked it
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(open_, f"brackets nest more than {MAX_DEPTH} deep")
        start_count = self.count
        branches = []
        while True:
            if self.tok.kind in ("]", "|", "EOF"):
                raise self.error(self.tok, f"empty branch in {kind}[...]", _BLOCK_USAGE[kind])
            branches.append(tuple(self.parse_chain()))
            if self.tok.kind == "|":
                self.take()
                continue
            if self.tok.kind != "]":
                raise self.error(self.tok, f"expected '|' or ']' in {kind}[...] opened at column "
                                 f"{self.src.where(open_.pos)[1]}, found {_describe(self.tok)}",
                                 _BLOCK_USAGE[kind])
            break
        self.take()
        self.depth -= 1
        if kind == "RES" and len(branches) > 2:
            raise self.error(word, f"RES[...] has {len(branches)} branches", _BLOCK_USAGE["RES"])
        if kind == "CAT" and len(branches) < 2:
            raise self.error(word, "CAT[...] has one branch: nothing to concatenate with",
                             _BLOCK_USAGE["CAT"])
        if self.tok.kind == "*":
            raise self.error(self.tok, f"a {kind}[...] block is repeated by putting it in a group",
                             f"write [{kind}[...]]*N")
        self.count = start_count + sum(
            s.size if isinstance(s, BlockSpec) else 1 for b in branches for s in b) + 1
        self._check_count(word)
        return BlockSpec(kind, tuple(branches), col, line, word.pos)

    def parse_group(self) -> list[Any]:
        open_ = self.take()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(open_, f"brackets nest more than {MAX_DEPTH} deep")
        if self.tok.kind == "]":
            raise self.error(self.tok, "empty group '[]'", "put at least one layer inside [ ]")
        start_count = self.count
        inner = self.parse_chain()
        if self.tok.kind != "]":
            raise self.error(self.tok, f"expected ']' to close the '[' at column "
                             f"{self.src.where(open_.pos)[1]}, found {_describe(self.tok)}",
                             "a group is written [A -> B]*N")
        self.take()
        self.depth -= 1
        star = self.tok
        if star.kind != "*":
            hint = ""
            if star.kind == "NAME" and re.fullmatch(r"[xX][0-9]+", star.text):
                hint = f": write *{star.text[1:]}"
            raise self.error(star, f"expected '*N' after ']', found {_describe(star)}",
                             f"a group is written [A -> B]*N with N >= 0 whole{hint}")
        self.take()
        nt = self.tok
        if nt.kind != "INT" or nt.text.startswith(("+", "-")):
            raise self.error(nt, f"expected a repetition count after '*', found {_describe(nt)}",
                             "the count is a whole number N >= 0 ([CONV(8,F=3) -> RELU]*2); "
                             "*0 leaves the group out")
        self.take()
        reps = self.whole(nt, "repetition count")
        # Layers inside were counted once while parsing; the expansion adds (reps - 1) copies.
        # (A block's layers are counted when it closes, and carried the same way.)
        per = self.count - start_count
        self.count = start_count + per * reps
        self._check_count(star)
        return inner * reps

    def parse_layer(self) -> LayerSpec:
        t = self.take()
        upper = t.text.upper()
        line, col = self.src.where(t.pos)
        if upper == "INPUT":
            raise self.error(t, "INPUT can only come first", "the spec starts with "
                             "INPUT(HxWxD); every other element is a layer")
        canon = _ALIASES.get(upper, upper)
        d = LAYERS.get(canon)
        if canon in LAYER_CLASSES and d is None:
            block = "RES" if canon == "ADD" else "CAT"
            raise self.error(t, f"{canon} merges branches: it is written as a block",
                             _BLOCK_USAGE[block])
        if d is None:
            raise self.error(t, f"unknown layer {t.text!r}{_did_you_mean(upper)}",
                             f"layer names: {_NAME_LIST}")
        kwargs: dict[str, Any] = {}
        offsets: dict[str, int] = {}
        if self.tok.kind == "(":
            kwargs = self.parse_args(d, offsets)
        elif self.tok.kind in ("INT", "FLOAT", "DIMS"):
            raise self.error(self.tok, f"expected '(' before the arguments of {d.name}",
                             f"write {d.signature}")
        missing = [a for a in d.required if a not in kwargs]
        if missing:
            raise self.error(t, f"{d.name} needs {' and '.join(missing)}",
                             f"write {d.signature}, e.g. {d.example}")
        return LayerSpec(d.name, kwargs, col, line, t.pos, offsets)

    def parse_args(self, d: _LayerDef, offsets: dict[str, int]) -> dict[str, Any]:
        open_ = self.take()
        kwargs: dict[str, Any] = {}
        npos = 0
        seen_named = False
        if self.tok.kind == ")":
            self.take()
            return kwargs
        if not d.args:
            raise self.error(self.tok, f"{d.name} takes no arguments",
                             f"write {d.name} alone")
        while True:
            t = self.tok
            if t.kind == "NAME" and self.toks[self.i + 1].kind == "=":
                arg = d.arg(t.text)
                if arg is None:
                    names = [a.name for a in d.args]
                    hint = _ARG_HINTS.get(t.text.lower())
                    close = ([hint] if hint in names else []) or \
                        difflib.get_close_matches(t.text, names, 1, 0.5)
                    dym = f" (did you mean {close[0]}?)" if close else ""
                    raise self.error(t, f"{d.name} has no argument {t.text!r}{dym}",
                                     f"arguments of {d.signature}")
                if arg.name in kwargs:
                    raise self.error(t, f"{d.name} argument {arg.name} is given twice")
                self.take()
                self.take()
                seen_named = True
            elif t.kind in ("INT", "FLOAT", "DIMS", "(") or (
                t.kind == "NAME" and t.text.lower() in ("true", "false")
            ):
                if seen_named:
                    raise self.error(t, "positional argument after a named one",
                                     f"write positional arguments first, in the order "
                                     f"{', '.join(d.positional)}: {d.signature}")
                if npos >= len(d.positional):
                    raise self.error(t, f"{d.name} takes at most {len(d.positional)} positional "
                                     f"argument{'s' if len(d.positional) != 1 else ''} "
                                     f"({', '.join(d.positional)})",
                                     f"name the others: {d.signature}")
                arg = d.arg(d.positional[npos])
                assert arg is not None  # the table lists only known names; not user input
                npos += 1
                if arg.name in kwargs:
                    raise self.error(t, f"{d.name} argument {arg.name} is given twice")
            elif t.kind == "NAME" and t.text.lower() in ("nan", "inf", "infinity"):
                raise self.error(t, f"{d.name}: {t.text} is not a usable value: every argument "
                                 "is a finite number", f"arguments of {d.signature}")
            elif t.kind == "NAME":
                raise self.error(self.toks[self.i + 1], f"expected '=' after {t.text!r}, found "
                                 f"{_describe(self.toks[self.i + 1])}",
                                 f"arguments of {d.signature}")
            else:
                raise self.error(t, f"expected an argument of {d.name}, found {_describe(t)}",
                                 f"arguments of {d.signature}")
            offsets[arg.name] = self.tok.pos
            kwargs[arg.name] = self.parse_value(d, arg)
            if self.tok.kind == ",":
                self.take()
                if self.tok.kind == ")":  # trailing comma
                    self.take()
                    return kwargs
                continue
            if self.tok.kind == ")":
                self.take()
                return kwargs
            raise self.error(self.tok, f"expected ',' or ')' in {d.name}(...), found "
                             f"{_describe(self.tok)}",
                             f"the '(' at column {self.src.where(open_.pos)[1]} is not closed; "
                             f"arguments of {d.signature}")

    def parse_value(self, d: _LayerDef, arg: SpecArg) -> Any:
        t = self.tok
        what = f"{d.name} {arg.name}"
        if arg.kind == "bool":
            if t.kind == "NAME" and t.text.lower() in ("true", "false"):
                self.take()
                return t.text.lower() == "true"
            if t.kind == "INT" and t.text in ("0", "1"):
                self.take()
                return t.text == "1"
            raise self.error(t, f"{what} must be true or false, found {_describe(t)}")
        if arg.kind == "float":
            if t.kind in ("INT", "FLOAT"):
                self.take()
                value = float(t.text)
                if not math.isfinite(value):
                    raise self.error(t, f"{what}={t.text} is not a finite number")
                return value
            raise self.error(t, f"{what} must be a number, found {_describe(t)}",
                             f"e.g. {arg.name}={arg.default}")
        if t.kind == "INT":
            self.take()
            return self.whole(t, what)
        if arg.kind == "pair":
            if t.kind == "DIMS":
                self.take()
                parts = re.split(r"[xX×]", re.sub(r"[ \t]", "", t.text))
                if len(parts) != 2:
                    raise self.error(t, f"{what}={t.text} has {len(parts)} sizes",
                                     f"a pair is rows x cols, e.g. {arg.name}=3x5")
                if any(len(p.lstrip("0")) > 6 for p in parts):
                    raise self.error(t, f"{what} {t.text[:20]} is too large",
                                     f"whole numbers in a spec are at most {MAX_SIZE:,}")
                pair = (int(parts[0]), int(parts[1]))
                if max(pair) > MAX_SIZE:
                    raise self.error(t, f"{what} {t.text} is too large",
                                     f"whole numbers in a spec are at most {MAX_SIZE:,}")
                return pair
            if t.kind == "(":
                self.take()
                a = self.expect("INT", f"a whole number in the pair {arg.name}=(rows, cols)")
                self.expect(",", "',' in the pair (rows, cols)", f"e.g. {arg.name}=(3,5)")
                b = self.expect("INT", f"a whole number in the pair {arg.name}=(rows, cols)")
                self.expect(")", "')' to close the pair (rows, cols)", f"e.g. {arg.name}=(3,5)")
                return (self.whole(a, what), self.whole(b, what))
            raise self.error(t, f"{what} must be a whole number or a pair, found {_describe(t)}",
                             f"e.g. {arg.name}=3, or {arg.name}=3x5 (rows x cols)")
        raise self.error(t, f"{what} must be a whole number, found {_describe(t)}",
                         f"e.g. {d.example}")


_BLOCK_USAGE = {
    "RES": "a residual block is RES[main] (adds the input itself, projected where the shapes "
           "differ) or RES[main | shortcut], e.g. RES[CONV(64,F=3,P=1) -> BN -> RELU -> "
           "CONV(64,F=3,P=1) -> BN]",
    "CAT": "a concatenation is CAT[branch | branch | ...], e.g. CAT[CONV(64,F=1) | "
           "CONV(96,F=1) -> CONV(128,F=3,P=1)]",
}


def _did_you_mean(upper: str) -> str:
    if upper in _HINTS:
        return f" (did you mean {_HINTS[upper]}?)"
    if upper == "SOFTMAX":
        return " (softmax is part of the loss: end the spec with FC(number of classes))"
    from convnet.spec.zoo import ZOO  # late: zoo imports nothing from here at module level

    if upper.lower() in ZOO:
        return (f" ({upper.lower()} is a zoo architecture: pass the name alone, "
                f"e.g. build({upper.lower()!r}))")
    close = difflib.get_close_matches(upper, [*_ALL_NAMES, *_ALIASES], 1, 0.6)
    return f" (did you mean {_ALIASES.get(close[0], close[0])}?)" if close else ""


# -------------------------------------------------------------------------------- public API
def parse(text: str, *, origin: str = "") -> tuple[tuple[int, ...] | None, list[LayerSpec]]:
    """Parse spec text into ``(input_shape, layers)``.

    ``input_shape`` is ``(H, W, D)`` or ``(n,)`` from the leading ``INPUT(...)``, or None when
    the text has none. Repetitions are expanded: ``[CONV(8,F=3) -> RELU]*2`` gives four
    :class:`LayerSpec`. ``origin`` (a file name) prefixes the position in error messages.

    >>> shape, layers = parse("INPUT(28x28x1) -> [CONV(8,3,P=1) -> RELU]*2 -> FC(10)")
    >>> shape, [l.kind for l in layers]
    ((28, 28, 1), ['CONV', 'RELU', 'CONV', 'RELU', 'FC'])
    >>> layers[0].kwargs
    {'K': 8, 'F': 3, 'P': 1}

    Raises :class:`SpecError` (pointing at the column) for any text that is not a spec.
    """
    if not isinstance(text, str):
        raise SpecError(f"a spec is text, received {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise SpecError(f"the spec is {len(text):,} characters long; at most {MAX_TEXT:,} are read")
    return _Parser(_Source(text, origin)).parse()


def resolve(spec: str | os.PathLike[str]) -> tuple[str, str]:
    """The spec text that ``spec`` names, and where it came from (for messages).

    ``spec`` is a zoo name ("vgg16", case-insensitive), a path to a spec file (an existing file,
    or any name ending in .txt or .spec), or the spec text itself.
    """
    from convnet.spec.zoo import ZOO

    if isinstance(spec, os.PathLike):
        return _read_file(Path(spec)), os.fspath(spec)
    if not isinstance(spec, str):
        raise SpecError(f"a spec is text, a file name or a zoo name, received "
                        f"{type(spec).__name__}")
    key = spec.strip().lower()
    if key in ZOO:
        return ZOO[key], ""
    if _looks_like_path(spec):
        return _read_file(Path(spec.strip())), spec.strip()
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", spec.strip()) and \
            spec.strip().upper() not in {*_ALL_NAMES, *_ALIASES}:
        name = spec.strip()
        close = difflib.get_close_matches(key, list(ZOO), 1, 0.6)
        dym = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecError(
            f"{name!r} is not a zoo architecture, a spec file, or a spec.{dym} Zoo: "
            f"{', '.join(ZOO)}. A spec reads e.g. INPUT(28x28x1) -> CONV(32,F=3,P=1) -> RELU "
            f"-> POOL -> FC(10)"
        )
    return spec, ""


def _looks_like_path(spec: str) -> bool:
    s = spec.strip()
    if not s or "\n" in s or "\0" in s or len(s) > 4096:
        return False
    if s.lower().endswith((".txt", ".spec")) and "->" not in s and "→" not in s:
        return True  # named like a spec file: a missing one is reported as such
    try:
        return Path(s).is_file()
    except (OSError, ValueError):
        return False


def _read_file(path: Path) -> str:
    from convnet.safety import read_regular  # regular files only, read with a cap

    if not path.exists():
        raise SpecError(f"spec file {path} does not exist")
    data = read_regular(path, what="spec file", error=SpecError, max_bytes=MAX_TEXT)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"spec file {path} is not UTF-8 text ({e.reason} at byte {e.start})") \
            from None


def make_layer(spec: LayerSpec) -> Layer:
    """The layer a parsed :class:`LayerSpec` describes (its constructor validates the values)."""
    d = LAYERS[spec.kind]
    kwargs = {}
    for name, value in spec.kwargs.items():
        arg = d.arg(name)
        kwargs[arg.keyword if arg is not None else name] = value
    return LAYER_CLASSES[spec.kind](**kwargs)


def make_items(specs: list[Any], src: _Source | None = None,
               positions: dict[int, int] | None = None) -> list[Any]:
    """Layers and blocks (:mod:`convnet.net.blocks`) for parsed specs; ``positions`` collects
    each layer's offset in the text (a block's merge at the block's word)."""
    from convnet.net.blocks import Block

    items: list[Any] = []
    for s in specs:
        if isinstance(s, BlockSpec):
            branches = [make_items(list(b), src, positions) for b in s.branches]
            block = Block(s.kind, branches, identity=s.kind == "RES" and len(branches) == 1,
                          offset=s.offset)
            if positions is not None:
                positions[id(block.merge)] = s.offset
            items.append(block)
            continue
        try:
            layer = make_layer(s)
        except ConvnetError as e:
            if src is None:
                raise
            # constructors name their kind already ("CONV: received S=0 ..."); point at the
            # argument the message names when there is one
            msg = str(e) if str(e).startswith(f"{s.kind}:") else f"{s.kind}: {e}"
            named = [s.arg_offsets[m] for m in re.findall(r"(\w+)=", msg) if m in s.arg_offsets]
            raise src.error(named[0] if named else s.offset, msg) from None
        except (TypeError, ValueError, OverflowError) as e:  # a constructor that lets one slip
            if src is None:
                raise SpecError(f"{s.kind}: invalid arguments ({e})") from None
            raise src.error(s.offset, f"{s.kind}: invalid arguments ({e})") from None
        if positions is not None:
            positions[id(layer)] = s.offset
        items.append(layer)
    return items


def has_blocks(specs: list[Any]) -> bool:
    return any(isinstance(s, BlockSpec) for s in specs)


def build(
    spec: str | os.PathLike[str],
    *,
    input_shape: tuple[int, ...] | None = None,
    seed: int | None = None,
    dtype: Any = np.float32,
    weights: bool = True,
    literal: bool = False,
) -> Graph:
    """Build a network from spec text, a spec file, or a zoo name: a
    :class:`~convnet.net.sequential.Sequential` for a chain, a :class:`~convnet.net.graph.Graph`
    for a spec with RES[...] or CAT[...] blocks. ``literal=True`` takes ``spec`` as spec TEXT
    only, never a file name or a zoo name (:func:`build_text`).

    ``literal=True`` takes ``spec`` as spec text only, never as a file name or a zoo name (what a
    checkpoint's stored spec is: text from a file that may be hostile must not make convnet
    open a path such as ``/proc/self/environ``).

    ``input_shape`` ``(H, W, D)`` or ``(n,)`` replaces the spec's ``INPUT`` (and is required when
    the spec has none): a fully convolutional zoo net can be built for any image size.
    ``weights=False`` infers every shape but allocates nothing (what ``summary`` uses).

    Shape:
        The network's input is ``(N, *input_shape)``; its output ``(N, *net.output_shape)``.

    >>> net = build("INPUT(28x28x1) -> CONV(8,F=3,P=1) -> RELU -> POOL -> FC(10)", seed=0)
    >>> net.spec
    'INPUT(28x28x1) -> CONV(8,F=3,P=1) -> RELU -> POOL -> FC(10)'

    Raises:
        SpecError: text that does not parse, or a layer argument its constructor rejects; the
            message points at the column.
        ShapeError: shapes that do not work (a stride that does not fit its input), naming the
            layer; the message ends with the spec line and a caret under that layer.
    """
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)
                             or seed < 0):
        raise ConfigError(f"seed={seed!r} must be a whole number >= 0, or None")
    if literal:
        return build_text(spec, input_shape=input_shape, seed=seed, dtype=dtype, weights=weights)
    text, origin = resolve(spec)
    return build_text(text, origin=origin, input_shape=input_shape, seed=seed, dtype=dtype,
                      weights=weights)


def build_text(text: str, *, origin: str = "", input_shape: tuple[int, ...] | None = None,
               seed: int | None = None, dtype: Any = np.float32, weights: bool = True) -> Graph:
    """:func:`build` for spec TEXT only: never a file name or a zoo name (what a checkpoint's
    stored spec is: text stored in a model is text, never a path)."""
    from convnet.net.graph import Graph, check_input_shape
    from convnet.net.sequential import Sequential

    if not isinstance(text, str):
        raise SpecError(f"a spec is text, received {type(text).__name__}")
    src = _Source(text, origin)
    if len(text) > MAX_TEXT:
        raise SpecError(f"the spec is {len(text):,} characters long; at most {MAX_TEXT:,} are read")
    shape, specs = _Parser(src).parse()
    if input_shape is not None:
        try:
            shape = check_input_shape(input_shape)
        except ShapeError as e:
            raise SpecError(str(e)) from None
    if shape is None:
        raise src.error(0, "the spec does not start with INPUT", "write INPUT(HxWxD) first, e.g. "
                        "INPUT(28x28x1) -> ..., or pass input_shape=(H, W, D)")
    positions: dict[int, int] = {}
    items = make_items(specs, src, positions)
    cls = Graph if has_blocks(specs) else Sequential
    try:
        net = cls(items, input_shape=shape, seed=seed, dtype=dtype, weights=False)
        if weights:
            net = cls(items, input_shape=shape, seed=seed, dtype=dtype, weights=True)
    except ShapeError as e:
        from convnet.net.blocks import flat_layers

        culprit = _failing_layer(flat_layers(items), str(e))
        if culprit is not None and id(culprit) in positions:
            raise src.error(positions[id(culprit)], str(e), cls=ShapeError) from None
        raise
    return net


def _failing_layer(layers: list[Any], message: str) -> Any:
    """The layer a Sequential ShapeError names (its message starts with the layer name)."""
    best = None
    for layer in layers:
        name = getattr(layer, "name", None)
        if name and re.match(rf"{re.escape(name)}\b", message):
            best = layer
    return best


def to_text(input_shape: tuple[int, ...], layers: list[Any]) -> str:
    """Flat spec text of parsed layers (repetitions expanded, blocks kept), as ``net.spec``
    writes it."""
    return f"INPUT({fmt_shape(input_shape)}) -> {_items_text(layers)}"


def _items_text(specs: list[Any]) -> str:
    parts = []
    for s in specs:
        if isinstance(s, BlockSpec):
            parts.append(f"{s.kind}[{' | '.join(_items_text(list(b)) for b in s.branches)}]")
            continue
        args = []
        d = LAYERS[s.kind]
        for i, a in enumerate(d.args):
            if a.name not in s.kwargs:
                continue
            v = s.kwargs[a.name]
            text = (
                f"{v[0]}x{v[1]}" if isinstance(v, tuple)
                else str(v).lower() if isinstance(v, bool) else str(v)
            )
            positional = i < len(d.positional) and a.name in d.required
            args.append(text if positional else f"{a.name}={text}")
        parts.append(f"{s.kind}({','.join(args)})" if args else s.kind)
    return " -> ".join(parts)


__all__ = [
    "BLOCKS", "LAYERS", "MAX_DEPTH", "MAX_LAYERS", "MAX_SIZE", "BlockSpec", "LayerSpec", "build",
    "build_text", "layer_names", "make_items", "make_layer", "parse", "resolve", "to_text",
    "tokenize",
]
