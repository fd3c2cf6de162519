"""A PyTorch twin of a convnet network: same layers, same initial weights, NCHW.

Used by the benchmark so that both systems run exactly the same computation. Weights are copied
from the convnet layers (CONV ``(K, F, F, D)`` -> torch ``(K, D, F, F)``; DECONV ``(D, F, F, K)``
-> torch ``(D, K, F, F)``; FC ``(n, K)`` -> torch ``(K, n)``); before the first FC the volume is
flattened in convnet's NHWC order (``permute(0, 2, 3, 1)``), so the scores agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _is_chain(net: Any) -> bool:
    return all(tuple(srcs) == (i - 1,) for i, srcs in enumerate(net.inputs_of))


def to_torch(net: Any) -> Any:
    """``torch.nn.Module`` computing the same function as the convnet network ``net``.

    A chain becomes an ``nn.Sequential``; a graph (residual blocks, CAT branches) a module that
    runs the same layers in the same order, each on the outputs named by ``net.inputs_of``
    (an ADD is ``+``, a CAT is ``torch.cat`` over channels, RELU6 is ``nn.ReLU6``, a DWCONV or a
    grouped CONV is ``nn.Conv2d(groups=G)``)."""
    import torch
    from torch import nn

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    chain = _is_chain(net)
    mods: list[nn.Module] = []
    flat = False
    for layer in net.layers:
        kind = layer.kind
        if kind in ("CONV", "DWCONV"):
            w = layer.window
            m = nn.Conv2d(layer.input_shape[2], layer.K, w.F, w.S, w.P, w.dilation,
                          bias=layer.bias, groups=layer.groups)
            with torch.no_grad():
                m.weight.copy_(t(layer.params["W"].transpose(0, 3, 1, 2)))
                if layer.bias:
                    m.bias.copy_(t(layer.params["b"]))
        elif kind == "DECONV":
            w = layer.window
            m = nn.ConvTranspose2d(layer.input_shape[2], layer.K, w.F, w.S, w.P,
                                   layer.output_padding, bias=layer.bias, dilation=w.dilation)
            with torch.no_grad():
                m.weight.copy_(t(layer.params["W"].transpose(0, 3, 1, 2)))
                if layer.bias:
                    m.bias.copy_(t(layer.params["b"]))
        elif kind == "FC":
            lin = nn.Linear(int(np.prod(layer.input_shape)), layer.K, bias=layer.bias)
            with torch.no_grad():
                lin.weight.copy_(t(layer.params["W"].T))
                if layer.bias:
                    lin.bias.copy_(t(layer.params["b"]))
            if len(layer.input_shape) == 3:
                if chain and not flat:
                    mods.append(_NHWCFlatten())
                    flat = True
                elif not chain:
                    lin = nn.Sequential(_NHWCFlatten(), lin)
            m = lin
        elif kind == "FLATTEN":
            m, flat = _NHWCFlatten(), True
        elif kind == "RELU":
            m = nn.ReLU()
        elif kind == "RELU6":
            m = nn.ReLU6()
        elif kind in ("ADD", "CAT"):
            m = _Merge(kind)
        elif kind == "POOL":
            w = layer.window
            m = nn.MaxPool2d(w.F, w.S, w.P)
        elif kind == "AVGPOOL":
            w = layer.window
            m = nn.AvgPool2d(w.F, w.S, w.P)
        elif kind == "GAP":
            m = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        elif kind == "BN":
            D = layer.input_shape[-1]
            bn = nn.BatchNorm2d if len(layer.input_shape) == 3 else nn.BatchNorm1d
            m = bn(D, eps=layer.eps, momentum=layer.momentum)
            with torch.no_grad():
                m.weight.copy_(t(layer.params["gamma"]))
                m.bias.copy_(t(layer.params["beta"]))
                m.running_mean.copy_(t(layer.buffers["running_mean"]))
                m.running_var.copy_(t(layer.buffers["running_var"]))
        elif kind == "DROPOUT":
            m = _keyed_dropout(layer)
        elif kind == "TANH":
            m = nn.Tanh()
        elif kind == "SIGMOID":
            m = nn.Sigmoid()
        else:
            raise NotImplementedError(f"no torch twin for {kind}")
        mods.append(m)
    if chain:
        return nn.Sequential(*mods)
    return _graph_module()(mods, [tuple(s) for s in net.inputs_of])


def _Merge(kind: str) -> Any:  # noqa: N802 - reads like the class it makes
    from torch import nn

    class Merge(nn.Module):
        def __init__(self, kind: str) -> None:
            super().__init__()
            self.kind = kind

        def forward(self, *xs):  # noqa: ANN002, ANN202
            if self.kind == "CAT":
                return torch_cat(xs)
            out = xs[0]
            for x in xs[1:]:
                out = out + x
            return out

    return Merge(kind)


def torch_cat(xs: Any) -> Any:
    import torch

    return torch.cat(list(xs), dim=1)


def _graph_module() -> Any:
    from torch import nn

    class GraphModule(nn.Module):
        """Runs ``mods[i]`` on the outputs of ``inputs_of[i]`` (-1: the network's input); the
        last layer's output is the result. Outputs no later layer reads are dropped at once."""

        def __init__(self, mods: list, inputs_of: list[tuple[int, ...]]) -> None:
            super().__init__()
            self.mods = nn.ModuleList(mods)
            self.inputs_of = inputs_of
            last_use: dict[int, int] = {}
            for i, srcs in enumerate(inputs_of):
                for s in srcs:
                    last_use[s] = i
            self.free_after = [[s for s in srcs if last_use[s] == i]
                               for i, srcs in enumerate(inputs_of)]

        def forward(self, x):  # noqa: ANN001, ANN202
            outs = {-1: x}
            for i, m in enumerate(self.mods):
                srcs = self.inputs_of[i]
                h = m(*[outs[s] for s in srcs])
                for s in self.free_after[i]:
                    del outs[s]
                outs[i] = h
            return outs[len(self.mods) - 1]

    return GraphModule


def _keyed_dropout(layer: Any) -> Any:
    """``nn.Dropout(p)`` that, given the batch's :class:`~convnet.keyed_random.SampleKeys` in
    ``.keys`` (one batch, then forgotten, as the convnet layer's ``use_keys``), drops exactly the
    units the convnet layer drops: its keep mask is computed by the same function (NHWC, so a
    volume's mask is permuted to NCHW). Without keys: torch's own dropout."""
    import zlib

    import torch
    from torch import nn

    from convnet.keyed_random import STREAM_DROPOUT

    class KeyedDropout(nn.Module):
        def __init__(self, p: float, name: str) -> None:
            super().__init__()
            self.p = p
            self.stream = (STREAM_DROPOUT, zlib.crc32(name.encode()))
            self.keys: Any = None

        def forward(self, x):  # noqa: ANN001, ANN202
            keys, self.keys = self.keys, None
            if not self.training or self.p == 0.0:
                return x
            if keys is None:
                return nn.functional.dropout(x, self.p, True)
            nhwc = (x.shape[2], x.shape[3], x.shape[1]) if x.dim() == 4 else tuple(x.shape[1:])
            keep = torch.from_numpy(keys.keep_mask(self.stream, nhwc, self.p).astype(np.float32))
            if x.dim() == 4:
                keep = keep.permute(0, 3, 1, 2)
            return x * keep / (1.0 - self.p)

    return KeyedDropout(layer.p, layer.name)


def _flatten_module() -> Any:
    from torch import nn

    class NHWCFlatten(nn.Module):
        """Flatten an NCHW volume in convnet's NHWC order, so FC weights mean the same."""

        def forward(self, x):  # noqa: ANN001, ANN202
            return x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x

    return NHWCFlatten


def _NHWCFlatten() -> Any:  # noqa: N802 - reads like the class it makes
    return _flatten_module()()


def nchw(x: np.ndarray) -> Any:
    """An NHWC batch as a contiguous NCHW torch tensor (done once, outside the timed region)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
