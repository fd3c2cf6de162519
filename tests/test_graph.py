"""Branching networks: RES/CAT blocks, ADD and CAT merges, grouped and depthwise CONV, RELU6.

Every new layer's backward by float64 central differences and against PyTorch on randomized
hyperparameters; whole graphs (a gradient reaching a node by two paths is summed) the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.net.blocks import decompose
from convnet.net.plan import LayerStep, MergeStep
from convnet.ops import grouped as G
from gradcheck import numeric_grad, rel_error

TF = torch.nn.functional


def _t(a):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=True)


def _nchw(a):
    return a.transpose(0, 3, 1, 2)


def _nhwc(a):
    return np.asarray(a).transpose(0, 2, 3, 1)


# ----------------------------------------------------------------- grouped / depthwise ops
@st.composite
def grouped_cfg(draw):
    groups = draw(st.integers(1, 4))
    depthwise = draw(st.booleans())
    if depthwise:
        D = draw(st.integers(1, 5))
        groups = D
        K = D * draw(st.integers(1, 3))
    else:
        D = groups * draw(st.integers(1, 3))
        K = groups * draw(st.integers(1, 3))
    fh, fw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    H = draw(st.integers(max(1, (fh - 1) * d[0] + 1 - 2 * p[0]), 7))
    W = draw(st.integers(max(1, (fw - 1) * d[1] + 1 - 2 * p[1]), 7))
    return dict(N=draw(st.integers(1, 3)), H=H, W=W, D=D, K=K, F=(fh, fw), S=s, P=p, dil=d,
                groups=groups, bias=draw(st.booleans()))


@settings(max_examples=40, deadline=None)
@given(grouped_cfg(), st.integers(0, 2**31 - 1))
def test_grouped_and_depthwise_conv_match_torch(cfg, seed):
    """Forward and all three gradients against torch.nn.functional.conv2d(groups=G)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cfg["N"], cfg["H"], cfg["W"], cfg["D"]))
    W = rng.standard_normal((cfg["K"], *cfg["F"], cfg["D"] // cfg["groups"]))
    b = rng.standard_normal(cfg["K"]) if cfg["bias"] else None
    out, cache = G.grouped_conv2d_forward(x, W, b, cfg["S"], cfg["P"], cfg["dil"], cfg["groups"])
    xt, wt = _t(_nchw(x)), _t(W.transpose(0, 3, 1, 2))
    bt = _t(b) if b is not None else None
    ref = TF.conv2d(xt, wt, bt, stride=cfg["S"], padding=cfg["P"], dilation=cfg["dil"],
                    groups=cfg["groups"])
    np.testing.assert_allclose(out, _nhwc(ref.detach()), rtol=1e-10, atol=1e-10)
    dout = rng.standard_normal(out.shape)
    ref.backward(torch.tensor(_nchw(dout)))
    dx, dW, db = G.grouped_conv2d_backward(dout, cache)
    np.testing.assert_allclose(dx, _nhwc(xt.grad), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dW, wt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-10,
                               atol=1e-10)
    if b is not None:
        np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-10, atol=1e-10)
    else:
        assert db is None
    dx2, dW2, _ = G.grouped_conv2d_backward(dout, cache, need_dx=False)
    assert dx2 is None and np.array_equal(dW2, dW)


@pytest.mark.parametrize("spec", [
    "INPUT(6x5x4) -> CONV(6,F=3,P=1,G=2) -> RELU6 -> FC(3)",
    "INPUT(7x7x3) -> DWCONV(F=3,S=2,P=1) -> RELU6 -> DWCONV(F=2,multiplier=2,bias=false) -> FC(2)",
])
def test_grouped_layers_central_differences(spec):
    net = cn.build(spec, seed=1, dtype=np.float64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *net.input_shape))
    y = np.array([0, 1])

    def loss():
        return cn.softmax_cross_entropy(net.forward(x, train=True), y)[0]

    _, d = cn.softmax_cross_entropy(net.forward(x, train=True), y)
    dx = net.backward(d)
    assert rel_error(dx, numeric_grad(loss, x)) < 1e-6
    for name, p, g in net.parameters():
        np.testing.assert_allclose(g, numeric_grad(loss, p), rtol=1e-5, atol=1e-8, err_msg=name)


def test_relu6_matches_torch_including_the_ends():
    x = np.array([[-1.0, 0.0, 0.5, 6.0, 7.0, 5.999]])
    layer = cn.ReLU6()
    out = layer.forward(x, train=True)
    xt = _t(x)
    ref = TF.relu6(xt)
    np.testing.assert_array_equal(out, ref.detach().numpy())
    g = np.arange(1.0, 7.0)[None]
    ref.backward(torch.tensor(g))
    np.testing.assert_array_equal(layer.backward(g), xt.grad.numpy())


def test_grouped_conv_counts_and_errors():
    net = cn.build("INPUT(9x9x64) -> CONV(128,F=1,G=4) -> DWCONV(F=3,S=2,P=1)", weights=False)
    assert net.layers[0].count_params() == 64 // 4 * 128 + 128
    assert net.layers[1].count_params() == 9 * 128 + 128
    assert net.layers[0].macs() == 9 * 9 * 128 * 16
    assert net.layers[1].macs() == 5 * 5 * 128 * 9
    assert net.output_shape == (5, 5, 128)
    with pytest.raises(cn.ShapeError, match=r"G=3 groups must divide the input depth D=64"):
        cn.build("INPUT(8x8x64) -> CONV(6,F=1,G=3)", weights=False)
    with pytest.raises(cn.SpecError, match=r"G=4 groups must divide the K=6 filters"):
        cn.build("INPUT(8x8x64) -> CONV(6,F=1,G=4)", weights=False)
    assert cn.build("INPUT(8x8x64) -> CONV(128,F=1,G=4)", weights=False).spec == \
        "INPUT(8x8x64) -> CONV(128,F=1,G=4)"


# ------------------------------------------------------------------------------- blocks
RESNET_ISH = ("INPUT(8x8x3) -> CONV(8,F=3,P=1,bias=false) -> BN -> RELU "
              "-> RES[CONV(8,F=3,P=1,bias=false) -> BN -> RELU -> CONV(8,F=3,P=1,bias=false) -> BN]"
              " -> RELU -> RES[CONV(16,F=3,S=2,P=1,bias=false,floor=true) -> BN -> "
              "RELU -> CONV(16,F=3,P=1,bias=false) -> BN] -> RELU "
              "-> CAT[CONV(4,F=1) | CONV(2,F=1) -> RELU -> CONV(6,F=3,P=1) | POOL(F=3,S=1,P=1) "
              "-> CONV(3,F=1)] -> RELU -> GAP -> FC(5)")


def test_res_block_inserts_a_projection_and_says_so():
    net = cn.build(RESNET_ISH, weights=False)
    proj = [ly for ly in net.layers if ly.inserted == "projection"]
    assert [ly.to_spec() for ly in proj] == ["CONV(16,F=1,S=2,bias=false,floor=true)", "BN"]
    assert "RES[CONV(16,F=3,S=2,P=1,bias=false,floor=true) -> BN -> RELU -> " \
           "CONV(16,F=3,P=1,bias=false) -> BN | CONV(16,F=1,S=2,bias=false,floor=true) -> BN]" \
        in net.spec
    assert net.output_shape == (5,)
    assert net["cat1"].output_shape == (4, 4, 13)
    again = cn.build(net.spec, weights=False)          # the spec round trip: same names
    assert [ly.name for ly in again.layers] == [ly.name for ly in net.layers]
    assert again.spec == net.spec and again.num_params == net.num_params


def test_old_specs_still_build_a_sequential():
    net = cn.build("INPUT(28x28x1) -> [CONV(8,F=3,P=1) -> RELU]*2 -> POOL -> FC(10)",
                   weights=False)
    assert type(net) is cn.Sequential and net.is_chain


@pytest.mark.parametrize("spec, message, column", [
    ("INPUT(8x8x3) -> RES[]", "empty branch in RES[...]", 21),
    ("INPUT(8x8x3) -> CAT[CONV(2,F=1)]", "CAT[...] has one branch", 17),
    ("INPUT(8x8x3) -> RES[CONV(2,F=1) | CONV(2,F=1) | CONV(2,F=1)]", "RES[...] has 3 branches",
     17),
    ("INPUT(8x8x3) -> RES CONV(2,F=1)", "expected '[' after RES", 21),
    ("INPUT(8x8x3) -> ADD", "ADD merges branches: it is written as a block", 17),
    ("INPUT(8x8x3) -> RES[CONV(2,F=1)]*2", "repeated by putting it in a group", 33),
    ("INPUT(8x8x3) -> CAT[CONV(2,F=1) | CONV(3,F=1)", "expected '|' or ']' in CAT[...]", 46),
])
def test_block_syntax_errors_point_at_the_column(spec, message, column):
    with pytest.raises(cn.SpecError) as info:
        cn.build(spec, weights=False)
    assert message in str(info.value)
    assert info.value.column == column


def test_branch_shape_errors_name_the_branch_and_point_at_it():
    with pytest.raises(cn.ShapeError) as info:
        cn.build("INPUT(8x8x3) -> CAT[CONV(4,F=1) | CONV(4,F=3)]", weights=False)
    msg = str(info.value)
    assert "cat1 (CAT) merging 8x8x4 (from conv1) and 6x6x4 (from conv2)" in msg
    assert "the same H x W" in msg and info.value.column == 17
    with pytest.raises(cn.ShapeError) as info:
        cn.build("INPUT(7x7x3) -> CAT[CONV(4,F=1) | CONV(4,F=3,S=3)]", weights=False)
    assert "(in the branch 2 of CAT[...])" in str(info.value)
    assert "stride 3 does not fit" in str(info.value)
    with pytest.raises(cn.ShapeError, match=r"no 1x1 CONV maps a side of 7 to 5 "):
        cn.build("INPUT(7x7x3) -> RES[CONV(4,F=3)]", weights=False)


def test_gradient_through_two_paths_is_summed_central_differences():
    """A residual block (identity and projection shortcuts), a concatenation and a merge
    feeding a merge: every input and parameter gradient of a float64 graph."""
    spec = ("INPUT(5x5x2) -> CONV(3,F=3,P=1) -> RES[CONV(3,F=3,P=1) -> TANH] "
            "-> RES[CONV(4,F=3,S=2,P=1,floor=true) -> BN -> RELU] "
            "-> CAT[CONV(2,F=1) -> SIGMOID | RES[CONV(4,F=1)] | AVGPOOL(F=3,S=1,P=1)] -> FC(3)")
    net = cn.build(spec, seed=2, dtype=np.float64)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 5, 2))
    y = np.array([0, 2, 1])

    def loss():
        return cn.softmax_cross_entropy(net.forward(x, train=True), y)[0]

    _, d = cn.softmax_cross_entropy(net.forward(x, train=True), y)
    dx = net.backward(d)
    assert rel_error(dx, numeric_grad(loss, x)) < 1e-6
    for name, p, g in net.parameters():
        np.testing.assert_allclose(g, numeric_grad(loss, p), rtol=1e-5, atol=1e-8, err_msg=name)


def test_residual_net_matches_pytorch():
    """A ResNet basic block with a projection, a CAT and RELU6, forward and every gradient
    against the same computation written in PyTorch (float32 against float64)."""
    spec = ("INPUT(8x8x3) -> CONV(6,F=3,P=1,bias=false) -> BN -> RELU "
            "-> RES[CONV(12,F=3,S=2,P=1,bias=false,floor=true) -> BN -> RELU -> CONV(12,F=3,P=1) "
            "-> BN] "
            "-> RELU6 -> CAT[CONV(4,F=1,G=2) | DWCONV(F=3,P=1)] -> GAP -> FC(5)")
    net = cn.build(spec, seed=0)
    rng = np.random.default_rng(1)
    for layer in net.layers:
        if layer.kind == "BN":
            layer.params["gamma"][:] = rng.uniform(0.5, 1.5, layer.params["gamma"].shape)
            layer.params["beta"][:] = rng.standard_normal(layer.params["beta"].shape)
    x = rng.standard_normal((4, 8, 8, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 4])
    loss, d = cn.softmax_cross_entropy(net.forward(x, train=True), y)
    dx = net.backward(d)

    P = {name: _t(p) for name, p, _ in net.parameters()}

    def conv(h, name, S=1, P_=0, groups=1):
        w = P[f"{name}.W"].permute(0, 3, 1, 2)
        return TF.conv2d(h, w, P.get(f"{name}.b"), stride=S, padding=P_, groups=groups)

    def bn(h, name):
        return TF.batch_norm(h, None, None, P[f"{name}.gamma"], P[f"{name}.beta"], training=True)

    xt = _t(_nchw(x))
    h = TF.relu(bn(conv(xt, "conv1", P_=1), "bn1"))
    main = bn(conv(TF.relu(bn(conv(h, "conv2", S=2, P_=1), "bn2")), "conv3", P_=1), "bn3")
    short = bn(conv(h, "conv4", S=2), "bn4")
    h = TF.relu6(main + short)
    h = torch.cat([conv(h, "conv5", groups=2), conv(h, "dwconv1", P_=1, groups=12)], dim=1)
    s = h.mean(dim=(2, 3)) @ P["fc1.W"] + P["fc1.b"]
    lt = TF.cross_entropy(s, torch.from_numpy(y))
    lt.backward()
    assert [ly.name for ly in net.layers if ly.inserted] == ["conv4", "bn4"]
    assert abs(loss - lt.item()) < 1e-5
    assert rel_error(dx, _nhwc(xt.grad)) < 1e-4
    for name, _, g in net.parameters():
        # a bias before a BN has a true gradient of 0 (the BN removes any constant): an
        # absolute floor as well
        np.testing.assert_allclose(g, P[name].grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


# ------------------------------------------------------------------------- graph API
def test_graph_from_named_nodes_equals_the_spec():
    nodes = {
        "stem": (cn.Conv(4, F=3, P=1), "input"),
        "a": (cn.Conv(4, F=3, P=1), "stem"),
        "a_relu": (cn.ReLU(), "a"),
        "sum": (cn.Add(), ["a_relu", "stem"]),
        "b1": (cn.Conv(2, F=1), "sum"),
        "b2": (cn.Conv(3, F=1), "sum"),
        "cat": (cn.Concat(), ["b1", "b2"]),
        "fc": (cn.FC(3), "cat"),
    }
    net = cn.Graph(nodes, input_shape=(6, 6, 2), seed=0)
    assert net.spec == ("INPUT(6x6x2) -> CONV(4,F=3,P=1) -> RES[CONV(4,F=3,P=1) -> RELU] -> "
                        "CAT[CONV(2,F=1) | CONV(3,F=1)] -> FC(3)")
    twin = cn.build(net.spec, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 2)).astype(np.float32)
    np.testing.assert_array_equal(net.forward(x), twin.forward(x))
    assert sorted(net.state_dict()) == sorted(twin.state_dict())


def test_concat_branch_order_is_the_merge_input_order():
    nodes = [("a", cn.Conv(2, F=1), "input"), ("b", cn.Conv(3, F=1), "input"),
             ("cat", cn.Concat(), ["b", "a"])]
    net = cn.Graph(nodes, input_shape=(4, 4, 1), seed=0)
    assert net.spec == "INPUT(4x4x1) -> CAT[CONV(3,F=1) | CONV(2,F=1)]"


@pytest.mark.parametrize("nodes, message", [
    ([("a", cn.Conv(2, F=1), "b"), ("b", cn.Conv(2, F=1), "a")], "form a cycle"),
    ([("a", cn.Conv(2, F=1), "input"), ("b", cn.Conv(2, F=1), "nowhere")], "reads 'nowhere'"),
    ([("a", cn.Conv(2, F=1), "input"), ("b", cn.Conv(2, F=1), "input"),
      ("c", cn.Conv(2, F=1), "a")], "is read by no layer"),
    ([("a", cn.Conv(2, F=1), "input"), ("b", cn.Add(), ["a"])], "merges two or more inputs"),
])
def test_graph_wiring_errors(nodes, message):
    with pytest.raises(cn.ConfigError, match=message):
        cn.Graph(nodes, input_shape=(4, 4, 2))


def test_wiring_that_is_not_made_of_blocks_is_refused_naming_the_node():
    # a's output feeds two merges that are not the same block (a ladder)
    a, b, c = cn.Conv(2, F=1), cn.Conv(2, F=1), cn.Conv(2, F=1)
    add1, add2 = cn.Add(), cn.Add()
    layers = [a, b, add1, c, add2]
    for i, ly in enumerate(layers):
        ly.name = f"n{i}"
    with pytest.raises(cn.ConfigError, match="meet in different merges|not exactly the branches"):
        decompose(layers, [(-1,), (0,), (0, 1), (2,), (0, 3)])


def test_plan_in_a_graph_works_in_place_only_where_nobody_else_reads():
    net = cn.build("INPUT(6x6x4) -> CONV(4,F=3,P=1) -> RELU -> RES[CONV(4,F=3,P=1) -> RELU] "
                   "-> RELU -> FC(2)", seed=0)
    steps = {s.layers[0].name: s for s in net._plan.train}
    # relu1 reads conv1 (fresh, one reader): in place forward; its output feeds the block and
    # the shortcut, so the gradient it gets is a sum (not in place: summed from two readers)
    assert steps["relu1"].inplace_forward and not steps["relu1"].inplace_backward
    assert steps["relu3"].inplace_forward             # after the ADD's fresh sum
    assert isinstance(steps["add1"], MergeStep) and isinstance(steps["relu2"], LayerStep)
    assert not steps["relu2"].inplace_backward         # its gradient is the ADD's, shared
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 4)).astype(np.float32)
    before = x.copy()
    s = net.forward(x, train=True)
    dx = net.backward(np.ones_like(s))
    np.testing.assert_array_equal(x, before)
    # the same numbers as the layers one by one without any in-place write
    plain = cn.build(net.spec, seed=0)
    for name, p in net.state_dict().items():
        np.testing.assert_array_equal(plain.state_dict()[name], p)
    for step in plain._plan.train:
        for attr in ("inplace_forward", "inplace_backward"):
            if hasattr(step, attr):
                setattr(step, attr, False)
    s2 = plain.forward(x, train=True)
    np.testing.assert_array_equal(s, s2)
    np.testing.assert_array_equal(dx, plain.backward(np.ones_like(s2)))
