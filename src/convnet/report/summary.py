"""``summary``: every layer's output volume, parameters, MACs, receptive field and activation
memory, with totals, from the shapes alone (no weight is ever allocated: ``summary("vgg16")`` is
instant).

What is counted, stated once here and in every report:

- parameters: weights and biases (and BN's gamma and beta), with parameter sharing.
- MACs: multiply-accumulates of CONV, DECONV and FC for one image; pooling, activations, BN and
  DROPOUT are reported as 0. FLOPs = 2 x MACs.
- receptive field (RF): how many input pixels one unit sees, and its effective stride (how far
  apart neighbouring units' centres are on the input); padding included.
- activations: a layer's output volume for ``batch`` images at the network's dtype (float32: 4
  bytes a value).
- training memory: parameters + gradients (one each per parameter) + activations (the input and
  every layer's output, which backward needs). Not counted: optimizer state (momentum adds 1x the
  parameters, Adam 2x) and implementation workspaces such as im2col matrices.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from fractions import Fraction
from typing import Any

from convnet import arith
from convnet.arith import fmt_bytes, fmt_frac_pair, fmt_shape
from convnet.errors import ConfigError
from convnet.net import blocks as B
from convnet.net.graph import Graph
from convnet.report import Source, load_network

FORMATS = ("table", "markdown", "csv", "json")

COUNTED = (
    "training memory = parameters + gradients + activations (the input and every layer's output, "
    "kept for backward); not counted: optimizer state (momentum +1x, Adam +2x the parameters) "
    "and im2col workspaces"
)
MACS_NOTE = "MACs of CONV, DECONV and FC per image; pooling, activations and BN count 0; " \
            "FLOPs = 2 x MACs"


def _num(x: Fraction) -> int | float:
    return int(x) if x.denominator == 1 else float(x)


def structure(net: Graph) -> list[tuple[str, int, Any]]:
    """The network's rows in order, with its blocks: ``("layer", depth, layer)`` for each layer
    and ``("label", depth, (name, text))`` where a RES[ or CAT[ block opens, where each of its
    branches starts, and for an identity shortcut. ``depth`` is the nesting of blocks."""
    rows: list[tuple[str, int, Any]] = []

    def walk(items: list[B.Item], depth: int) -> None:
        for it in items:
            if not isinstance(it, B.Block):
                rows.append(("layer", depth, it))
                continue
            for i, branch in enumerate(it.branches):
                if it.kind == "RES":
                    what = "main branch" if i == 0 else "shortcut" + (
                        ", projected (inserted)"
                        if any(ly.inserted for ly in B.flat_layers(branch)) else "")
                else:
                    what = f"branch {i + 1} of {len(it.branches)}"
                rows.append(("label", depth, (f"{it.kind}[" if i == 0 else "|", what)))
                walk(branch, depth + 1)
            if it.kind == "RES" and it.identity:
                rows.append(("label", depth, ("|", "shortcut: the block's input itself "
                                                   "(identity)")))
            rows.append(("layer", depth, it.merge))

    walk(getattr(net, "items", None) or list(net.layers), 0)
    return rows


def _collect(net: Graph, batch: int) -> dict[str, Any]:
    """Every number of the report, once; the formats only lay it out."""
    itemsize = net.dtype.itemsize
    rows = arith.layer_rows(net, batch=batch, itemsize=itemsize)
    in_elems = arith.num_elements(net.input_shape)
    act_elems = in_elems + sum(arith.num_elements(r.output_shape) for r in rows)
    params = sum(r.params for r in rows)
    macs = sum(r.macs for r in rows)
    memory = arith.training_memory(params, act_elems, batch=batch, itemsize=itemsize)
    return {
        "spec": net.spec,
        "input_shape": list(net.input_shape),
        "output_shape": list(net.output_shape),
        "batch": batch,
        "dtype": str(net.dtype),
        "input_bytes": arith.activation_bytes(net.input_shape, batch, itemsize),
        "rows": rows,
        "params": params,
        "macs": macs,
        "flops": 2 * macs,
        "memory": memory,
        "structure": structure(net),
        "branching": not getattr(net, "is_chain", True),
    }


def _rf_text(rf: arith.ReceptiveField) -> tuple[str, str]:
    if rf.whole:
        return "all", "-"
    return fmt_frac_pair(rf.size), fmt_frac_pair(rf.jump)


def _cells(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["#", "layer", "spec", "output", "params", "MACs", "RF", "RF stride",
              f"activations (N={data['batch']})"]
    body = [["0", "input", f"INPUT({fmt_shape(tuple(data['input_shape']))})",
             fmt_shape(tuple(data["input_shape"])), "0", "0", "1", "1",
             fmt_bytes(data["input_bytes"])]]
    if not data["branching"]:
        for i, r in enumerate(data["rows"], 1):
            size, jump = _rf_text(r.rf)
            body.append([str(i), r.name, r.spec, fmt_shape(r.output_shape), f"{r.params:,}",
                         f"{r.macs:,}", size, jump, fmt_bytes(r.activation_bytes)])
        return header, body
    # a branching network: the layers indented by block, with a line where each block and
    # branch opens, and each merge naming what it merges
    by_name = {r.name: (i, r) for i, r in enumerate(data["rows"], 1)}
    for kind, depth, what in data["structure"]:
        pad = "  " * depth
        if kind == "label":
            word, text = what
            body.append(["", pad + word, text, "", "", "", "", "", ""])
            continue
        i, r = by_name[what.name]
        spec = r.spec
        name = pad + r.name
        if what.arity != 1:
            spec = f"{r.spec} of {' + '.join(r.inputs)}"
            name = pad + "] " + r.name
        size, jump = _rf_text(r.rf)
        body.append([str(i), name, spec, fmt_shape(r.output_shape), f"{r.params:,}",
                     f"{r.macs:,}", size, jump, fmt_bytes(r.activation_bytes)])
    return header, body


def _totals_lines(data: dict[str, Any]) -> list[str]:
    m = data["memory"]
    return [
        f"Parameters: {data['params']:,} ({fmt_bytes(m['params'])} in {data['dtype']})",
        f"MACs per image: {data['macs']:,} (FLOPs = 2 x MACs = {data['flops']:,})",
        f"Training memory at batch {data['batch']}: {fmt_bytes(m['total'])} = parameters "
        f"{fmt_bytes(m['params'])} + gradients {fmt_bytes(m['grads'])} + activations "
        f"{fmt_bytes(m['activations'])}",
        f"Counted: {COUNTED}. {MACS_NOTE}. RF: input pixels one unit sees (padding included) and "
        "the effective stride between neighbouring units; 'all' = the whole input.",
    ]


def _table(data: dict[str, Any]) -> str:
    header, body = _cells(data)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    left = {1, 2}  # names and specs read left-aligned; numbers right-aligned

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    rule = "-" * len(line(header))
    spec = textwrap.wrap(f"Network: {data['spec']}", 100, subsequent_indent="  ",
                         break_on_hyphens=False, break_long_words=False)
    out = [*spec, "", line(header), rule, *map(line, body), rule]
    totals = []
    for t in _totals_lines(data):
        totals += textwrap.wrap(t, 100, subsequent_indent="  ", break_on_hyphens=False)
    return "\n".join(out + totals) + "\n"


def _markdown(data: dict[str, Any]) -> str:
    header, body = _cells(data)

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    align = ["---:", ":---", ":---", "---:", "---:", "---:", "---:", "---:", "---:"]
    out = [f"**Network:** `{data['spec']}`", "", line(header), "| " + " | ".join(align) + " |",
           *map(line, body), ""]
    out += [f"- {t}" for t in _totals_lines(data)]
    return "\n".join(out) + "\n"


def _csv(data: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    extra = ["inputs"] if data["branching"] else []
    w.writerow(["index", "layer", "spec", "output", "params", "macs", "rf_size", "rf_stride",
                "activation_bytes", *extra])
    w.writerow([0, "input", f"INPUT({fmt_shape(tuple(data['input_shape']))})",
                fmt_shape(tuple(data["input_shape"])), 0, 0, 1, 1, data["input_bytes"],
                *([""] if extra else [])])
    for i, r in enumerate(data["rows"], 1):
        size, jump = _rf_text(r.rf)
        w.writerow([i, r.name, r.spec, fmt_shape(r.output_shape), r.params, r.macs, size, jump,
                    r.activation_bytes, *([" ".join(r.inputs)] if extra else [])])
    w.writerow(["", "total", "", fmt_shape(tuple(data["output_shape"])), data["params"],
                data["macs"], "", "", data["memory"]["activations"], *([""] if extra else [])])
    return buf.getvalue()


def _json(data: dict[str, Any]) -> str:
    layers = []
    for r in data["rows"]:
        layers.append({
            "name": r.name, "kind": r.kind, "spec": r.spec,
            "input_shape": list(r.input_shape), "output_shape": list(r.output_shape),
            "params": r.params, "macs": r.macs, "activation_bytes": r.activation_bytes,
            "inputs": list(r.inputs),
            "receptive_field": {
                "size": [_num(v) for v in r.rf.size], "stride": [_num(v) for v in r.rf.jump],
                "start": [_num(v) for v in r.rf.start], "whole_input": r.rf.whole,
            },
        })
    doc = {
        "spec": data["spec"], "input_shape": data["input_shape"],
        "output_shape": data["output_shape"], "batch": data["batch"], "dtype": data["dtype"],
        "input_bytes": data["input_bytes"],
        "layers": layers,
        "totals": {
            "params": data["params"], "macs": data["macs"], "flops": data["flops"],
            "training_memory_bytes": data["memory"],
        },
        "notes": {"memory": COUNTED, "macs": MACS_NOTE},
    }
    return json.dumps(doc, indent=2) + "\n"


def summary(source: Source, batch: int = 1, format: str = "table",
            input_shape: tuple[int, ...] | None = None) -> str:
    """A table of every layer and the totals, from the shapes alone.

    Args:
        source: a network, spec text, spec file, zoo name, or saved model (``.npz``).
        batch: images per step for the activation and training memory.
        format: ``"table"`` (aligned text), ``"markdown"``, ``"csv"`` (one row per layer, a
            header, and a total row) or ``"json"`` (the same numbers, machine-readable).
        input_shape: replaces the network's input size.

    Columns: layer name, spec, output volume (H x W x D), parameters, MACs, receptive field
    (size and effective stride, in input pixels), activation memory at ``batch``. The module
    docstring says exactly what is counted. A branching network (RES[...], CAT[...]) shows its
    blocks: the layers indented by block, a line where each block and branch opens, and each
    merge with what it merges (csv and json add each layer's ``inputs``).

    >>> print(summary("INPUT(32x32x3) -> CONV(10,F=5,P=2)", format="csv").splitlines()[2])
    1,conv1,"CONV(10,F=5,P=2)",32x32x10,760,768000,5,1,40960
    """
    if format not in FORMATS:
        raise ConfigError(f"format={format!r}: choose one of {', '.join(FORMATS)}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch={batch!r} must be a whole number >= 1")
    data = _collect(load_network(source, input_shape), batch)
    return {"table": _table, "markdown": _markdown, "csv": _csv, "json": _json}[format](data)


__all__ = ["COUNTED", "FORMATS", "summary"]
