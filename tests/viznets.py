"""Networks the page tests share (test_viz.py and test_viz_browser.py)."""

from __future__ import annotations

import numpy as np

import convnet as cn

SPEC = "INPUT(8x8x1) -> CONV(4,F=3,P=1) -> RELU -> POOL -> CONV(6,F=3) -> BN -> LRELU -> FC(10)"
# every layer kind the page recomputes, with non-square, strided, dilated and floor windows
EXOTIC = ("INPUT(9x9x3) -> CONV(4,F=3x2,S=2,P=1,floor=true) -> TANH -> DECONV(3,F=3,S=2) -> "
          "SIGMOID -> AVGPOOL(F=2,S=1) -> CONV(5,F=3,dilation=2,P=1) -> DROPOUT(0.3) -> FLATTEN "
          "-> FC(7)")

# a graph: an identity and a projection shortcut, a CAT of three branches (DWCONV, RELU6, a
# pool), a grouped CONV, and a CAT nested in a RES
GRAPH = ("INPUT(9x9x3) -> CONV(4,F=3,P=1) -> RES[CONV(4,F=3,P=1) -> BN -> RELU] -> "
         "RES[CONV(6,F=3,S=2,P=1) -> BN] -> RELU -> CAT[CONV(2,F=1) | DWCONV(F=3,P=1) -> RELU6 | "
         "POOL(F=3,S=1,P=1)] -> CONV(6,F=1,G=2) -> RES[CAT[CONV(3,F=1) | CONV(3,F=3,P=1)]] -> "
         "GAP -> FC(3)")

# a network that starts with a block (its branches read the input), nests a RES in a CAT, and
# merges vectors (a CAT of two FCs, a RES around an FC)
EDGE = ("INPUT(6x6x2) -> RES[CONV(2,F=3,P=1)] -> CAT[CONV(2,F=1) | RES[CONV(2,F=3,P=1) -> RELU]] "
        "-> FLATTEN -> CAT[FC(3) | FC(4) -> TANH] -> RES[FC(7) -> RELU] -> FC(2)")


def make_net(spec: str = SPEC, seed: int = 0) -> cn.Graph:
    net = cn.build(spec, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for layer in net.layers:  # non-trivial biases and BN statistics, so every term shows
        for key, value in {**layer.params, **layer.buffers}.items():
            if key in ("b", "beta", "running_mean"):
                value[...] = rng.normal(0, 0.3, value.shape)
            elif key in ("gamma", "running_var"):
                value[...] = rng.uniform(0.5, 1.5, value.shape)
    return net


def images(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)
