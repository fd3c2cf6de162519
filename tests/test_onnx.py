"""ONNX export and import (issue 14): one table read both ways.

- convnet -> ONNX -> convnet gives the very network back (spec, weights and scores bit for bit)
  and onnxruntime gives convnet's scores (relative error <= 1e-5) for every zoo network and for
  networks with DECONV, BN, GAP, dilation, rectangular F/S/P, groups, RES/CAT blocks, floor.
- Graphs written the way tf2onnx writes Keras Sequential CNNs (built here with onnx.helper:
  TensorFlow is too big to install for the tests) import and agree with onnxruntime.
- What convnet cannot represent is refused with a message naming the node and why; hostile
  files are refused before any large allocation.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import convnet as cn
from convnet.errors import CheckpointError, ConfigError, ShapeError
from convnet.interop import read_onnx
from convnet.interop.mapping import BY_KIND, BY_OP, NotRepresentable, nchw_order
from convnet.interop.onnx_export import compare_with_onnxruntime, export_onnx, to_model
from convnet.interop.onnx_import import agreement
from convnet.layers import LAYER_CLASSES

TOL = 1e-5


# ------------------------------------------------------------------------------- helpers
def randomize(net, seed=0):
    """Biases and BN statistics away from their initial values, so that every weight counts."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if "b" in layer.params:
            layer.params["b"][...] = rng.normal(0, 0.1, layer.params["b"].shape)
        if layer.kind == "BN":
            D = layer.params["gamma"].shape
            layer.params["gamma"][...] = rng.uniform(0.5, 1.5, D)
            layer.params["beta"][...] = rng.normal(0, 0.2, D)
            layer.buffers["running_mean"][...] = rng.normal(0, 0.3, D)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, D)
    return net


def same_network(a, b, x):
    assert a.spec == b.spec
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k
    assert np.array_equal(a.forward(x), b.forward(x))


def round_trip(net, tmp_path, name="m.onnx", **kw):
    """Export (checked), run with onnxruntime, import: the same network, the same scores."""
    path = export_onnx(net, tmp_path / name, **kw)
    assert compare_with_onnxruntime(net, path, nhwc=kw.get("nhwc", False)) <= TOL
    back = cn.import_onnx(path)
    x = np.random.default_rng(1).random((3, *net.input_shape), dtype=np.float32)
    same_network(net, back, x)
    return path, back


def make_model(nodes, inits, inputs, outputs, opset=17, ir=8, **kw):
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], **kw)
    m.ir_version = ir
    return m


def save(model, path):
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path


def tensor(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def refusal(path, **kw):
    with pytest.raises((NotRepresentable, CheckpointError, ShapeError)) as e:
        read_onnx(path, **kw)
    return str(e.value)


# --------------------------------------------------------------------------------- table
def test_every_layer_kind_has_a_line_in_the_table():
    # a layer kind added to convnet without an ONNX mapping fails here
    assert set(LAYER_CLASSES) <= set(BY_KIND), set(LAYER_CLASSES) - set(BY_KIND)
    for row in {id(r): r for r in BY_KIND.values()}.values():
        for op in row.ops:
            assert BY_OP[op] is row


def test_flatten_order_permutation_is_the_nchw_flatten():
    x = np.random.default_rng(0).random((2, 3, 4, 5))               # N, H, W, D
    assert np.array_equal(x.reshape(2, -1)[:, nchw_order((3, 4, 5))],
                          x.transpose(0, 3, 1, 2).reshape(2, -1))


# ------------------------------------------------------------------- round trips and ORT
SPECS = {
    "deconv_bn": "INPUT(8x10x3) -> CONV(6,F=3,P=1) -> BN -> RELU -> POOL -> "
                 "DECONV(4,F=3,S=2,P=1,output_padding=1) -> BN -> RELU -> DECONV(2,F=2,S=1)",
    "gap_dilation": "INPUT(12x12x2) -> CONV(5,F=3,P=2,dilation=2) -> RELU6 -> CONV(7,F=3) "
                    "-> GAP -> FC(4)",
    "rectangular": "INPUT(11x9x2) -> CONV(4,F=3x2,S=2x1,P=1x0,bias=false) -> LRELU(alpha=0.2) "
                   "-> AVGPOOL(F=2x3,S=2x1,P=1) -> TANH -> FC(6) -> SIGMOID -> FC(3)",
    "groups": "INPUT(6x6x4) -> CONV(8,F=3,P=1,G=2) -> RELU -> DWCONV(F=3,S=2,P=1,multiplier=2,"
              "floor=true) -> BN -> RELU -> CONV(6,F=1,G=2) -> FC(5)",
    "floor": "INPUT(9x9x1) -> CONV(3,F=3,S=2,floor=true) -> POOL(F=3,S=2,P=1,floor=true) -> FC(2)",
    "res_cat": "INPUT(8x8x3) -> CONV(8,F=3,P=1) -> RES[CONV(8,F=3,P=1) -> BN -> RELU -> "
               "CONV(8,F=3,P=1) -> BN] -> RELU -> RES[CONV(16,F=3,S=2,P=1,floor=true) -> BN] -> RELU -> "
               "CAT[CONV(4,F=1) | CONV(4,F=3,P=1) -> RELU | POOL(F=3,S=1,P=1) -> CONV(2,F=1)] "
               "-> GAP -> FC(3)",
    "flatten_dropout": "INPUT(5x4x2) -> CONV(3,F=3,P=1) -> FLATTEN -> DROPOUT(p=0.3) -> RELU "
                       "-> FC(7) -> DROPOUT -> FC(2)",
    "vectors": "INPUT(20) -> FC(16) -> BN -> RELU -> CAT[FC(4) | FC(3) -> TANH] -> FC(5)",
    "bn_after_fc_on_volume": "INPUT(4x4x2) -> CONV(3,F=3,P=1) -> FC(6) -> BN -> FC(2)",
}


@pytest.mark.parametrize("name", SPECS)
def test_round_trip_bit_for_bit_and_onnxruntime(name, tmp_path):
    net = randomize(cn.build(SPECS[name], seed=0))
    path, back = round_trip(net, tmp_path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    ops = {n.op_type for n in model.graph.node}
    assert ops <= {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "Gemm",
                   "Relu", "LeakyRelu", "Tanh", "Sigmoid", "Clip", "BatchNormalization",
                   "Flatten", "Transpose", "Add", "Concat"}, ops
    assert "Dropout" not in ops


def test_exported_shapes_are_convnets_including_floor(tmp_path):
    net = cn.build(SPECS["floor"], seed=0)
    model = onnx.shape_inference.infer_shapes(to_model(net, dynamic_size=False))
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.output]}
    conv, pool = net.layers[0], net.layers[1]
    assert shapes["conv1"] == ["N", 3, *conv.output_shape[:2]]        # 4x4, floored
    assert shapes["pool1"] == ["N", 3, *pool.output_shape[:2]]        # 2x2
    nodes = {n.name: n for n in model.graph.node}
    attrs = {a.name: helper.get_attribute_value(a) for a in nodes["pool1"].attribute}
    assert attrs["ceil_mode"] == 0 and attrs["pads"] == [1, 1, 1, 1]


def test_nhwc_graph_takes_convnets_layout(tmp_path):
    net = randomize(cn.build(SPECS["deconv_bn"], seed=0))
    path, _ = round_trip(net, tmp_path, nhwc=True)
    model = onnx.load(path)
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "H", "W", 3]           # fully convolutional: any size
    assert model.graph.node[0].op_type == "Transpose"
    assert json.loads(json.dumps({p.key: p.value for p in model.metadata_props}))[
        "convnet.layout"] == "NHWC"


def test_opset_range(tmp_path):
    net = cn.build("INPUT(4x4x1) -> CONV(2,F=3) -> FC(2)", seed=0)
    path = export_onnx(net, tmp_path / "m.onnx", opset=18)
    assert onnx.load(path).opset_import[0].version == 18
    assert compare_with_onnxruntime(net, path) <= TOL
    with pytest.raises(ConfigError, match=r"opset 16: convnet writes opset 17 to \d+"):
        export_onnx(net, tmp_path / "m.onnx", opset=16)


def test_export_refusals(tmp_path):
    net = cn.build("INPUT(4x4x1) -> FC(3)", seed=0)
    cases = [
        (dict(classes=["a", "b"]), ConfigError, "2 class names for a network with 3 outputs"),
        (dict(normalizer={"mean": [0.1, 0.2], "std": [1.0, 1.0]}), ConfigError,
         "normalisation statistics for 2 channel(s), but the network's input has 1"),
    ]
    for kw, cls, text in cases:
        with pytest.raises(cls) as e:
            export_onnx(net, tmp_path / "m.onnx", **kw)
        assert str(e.value) == text
    with pytest.raises(ConfigError) as e:
        export_onnx(cn.build("INPUT(4x4x1) -> DROPOUT", seed=0), tmp_path / "m.onnx")
    assert str(e.value) == ("export: the network computes nothing (its layers are the identity "
                            "in inference)")
    with pytest.raises(ConfigError) as e:
        export_onnx(cn.build("INPUT(4x4x1) -> FC(3)", weights=False), tmp_path / "m.onnx")
    assert str(e.value) == ("export: this network was built with weights=False (shapes only); "
                            "build it with weights to export it")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("name", ["lenet5", "seed004", "fashion", "fashion-bn", "cifar10", "fcn",
                                  "segnet", "digits", "resnet-cifar", "resnet18", "mobilenet_v2"])
def test_zoo_network_round_trip(name, tmp_path):
    shape = {"resnet18": (32, 32, 3), "mobilenet_v2": (32, 32, 3)}.get(name)
    net = randomize(cn.build(name, seed=0, input_shape=shape))
    round_trip(net, tmp_path)


BIG = {"alexnet": (67, 67, 3), "vgg16": (32, 32, 3), "resnet34": (32, 32, 3),
       "resnet50": (32, 32, 3), "googlenet": (64, 64, 3)}


@pytest.mark.slow
def test_every_zoo_network_exports_and_onnxruntime_agrees(tmp_path):
    """Every zoo network (the ImageNet ones on small images: the same layers and weight shapes
    but for the first FC of alexnet and vgg16) passes the full checker and onnxruntime."""
    small = {"lenet5", "seed004", "fashion", "fashion-bn", "cifar10", "fcn", "segnet", "digits",
             "resnet-cifar", "resnet18", "mobilenet_v2"}
    assert set(cn.zoo_names()) == small | set(BIG)    # a new zoo network is tested somewhere
    for name, shape in BIG.items():
        net = randomize(cn.build(name, seed=0, input_shape=shape))
        path = export_onnx(net, tmp_path / f"{name}.onnx")    # checker, full
        assert compare_with_onnxruntime(net, path, batch=1) <= TOL, name
        path.unlink()


# ------------------------------------------------------------ what travels with the model
def _trained_digits():
    from convnet.data import Normalizer, load_dataset

    train, _ = load_dataset("digits")
    net = cn.build("digits", seed=0)
    norm = Normalizer.fit(train.x)
    cn.fit(net, train, epochs=1, batch_size=64, normalizer=norm, seed=0)
    return net, norm, train


def test_trained_network_classes_and_normalisation(tmp_path):
    net, norm, train = _trained_digits()
    classes = [f"digit {c}" for c in train.classes]
    path = export_onnx(net, tmp_path / "d.onnx", classes=classes, normalizer=norm,
                       input_info={"shape": [8, 8, 1], "dataset": "digits"})
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert json.loads(meta["classes"]) == classes
    assert json.loads(meta["normalization"])["baked"] is False
    assert compare_with_onnxruntime(net, path) <= TOL
    m = read_onnx(path)
    assert m.classes == classes and m.input["dataset"] == "digits"
    assert np.array_equal(m.normalizer["mean"], norm.mean)
    assert np.array_equal(m.normalizer["std"], norm.std)
    # baked: the graph takes raw images and normalises them itself; import reads it back
    baked = export_onnx(net, tmp_path / "b.onnx", classes=classes, normalizer=norm,
                        bake_normalization=True)
    ops = [n.op_type for n in onnx.load(baked).graph.node]
    assert ops[:2] == ["Sub", "Div"]
    assert compare_with_onnxruntime(net, baked, normalizer=norm, baked=True) <= TOL
    m2 = read_onnx(baked)
    assert m2.baked and np.array_equal(m2.normalizer["mean"], norm.mean)
    assert np.array_equal(m2.normalizer["std"], norm.std)
    x = train.x[:8]
    same_network(net, m2.net, ((x - norm.mean) / norm.std).astype(np.float32))
    assert agreement(m2, baked) <= TOL


def test_fully_convolutional_twin_runs_on_larger_images(tmp_path):
    net = randomize(cn.build("fashion", seed=0))
    fcn = net.to_fully_convolutional()
    path = export_onnx(fcn, tmp_path / "fcn.onnx")
    dims = [d.dim_value or d.dim_param
            for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 1, "H", "W"]
    assert compare_with_onnxruntime(fcn, path, sizes=[(56, 56), (44, 60)]) <= TOL
    sess = ort.InferenceSession(str(path))
    assert sess.run(None, {"input": np.zeros((1, 1, 56, 56), np.float32)})[0].shape == \
        (1, 10, 8, 8)
    back = cn.import_onnx(path)          # the size comes from the metadata
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    same_network(fcn, back, x)


# -------------------------------------------------------------------- property: any chain
@st.composite
def chains(draw):
    H, W, D = draw(st.integers(5, 10)), draw(st.integers(5, 10)), draw(st.integers(1, 4))
    parts = [f"INPUT({H}x{W}x{D})"]
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["CONV", "DWCONV", "POOL", "AVGPOOL", "BN", "ACT", "DECONV",
                                     "DROPOUT"]))
        f = f"{draw(st.integers(1, 3))}x{draw(st.integers(1, 3))}"
        s = f"{draw(st.integers(1, 2))}x{draw(st.integers(1, 2))}"
        floor = ",floor=true" if draw(st.booleans()) else ""
        if kind == "CONV":
            g = draw(st.sampled_from([1, 1, 2]))
            parts.append(f"CONV({2 * draw(st.integers(1, 3))},F={f},S={s},"
                         f"P={draw(st.integers(0, 1))},dilation={draw(st.integers(1, 2))},"
                         f"bias={str(draw(st.booleans())).lower()}{floor}"
                         + (f",G={g})" if g > 1 else ")"))
        elif kind == "DWCONV":
            parts.append(f"DWCONV(F={f},S={s},P={draw(st.integers(0, 1))},"
                         f"multiplier={draw(st.integers(1, 2))}{floor})")
        elif kind in ("POOL", "AVGPOOL"):
            parts.append(f"{kind}(F=2,S={s},P={draw(st.integers(0, 1))}{floor})")
        elif kind == "DECONV":
            parts.append(f"DECONV({draw(st.integers(1, 4))},F={f},S={s},"
                         f"P={draw(st.integers(0, 1))})")
        elif kind == "ACT":
            parts.append(draw(st.sampled_from(["RELU", "RELU6", "LRELU(alpha=0.1)", "TANH",
                                               "SIGMOID"])))
        else:
            parts.append(kind)
    parts.append(draw(st.sampled_from(["", "GAP", "FC(3)", "GAP -> FC(2)", "FLATTEN -> FC(2)"])))
    return " -> ".join(p for p in parts if p)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                   HealthCheck.too_slow])
@given(chains(), st.integers(0, 2**31 - 1))
def test_random_chains_round_trip(tmp_path_factory, spec, seed):
    try:
        net = cn.build(spec, seed=seed % 1000)
    except (ShapeError, cn.SpecError, ConfigError):
        assume(False)
    assume(any(ly.kind != "DROPOUT" for ly in net.layers))   # else it computes nothing
    randomize(net, seed)
    tmp = tmp_path_factory.mktemp("chain")
    round_trip(net, tmp)


# ----------------------------------------------------------------- graphs tf2onnx writes
def _keras_weights(rng):
    return {
        "k1": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32),    # HWCN transposed to NCHW
        "b1": rng.normal(0, 0.1, 8).astype(np.float32),
        "k2": rng.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32),
        "b2": rng.normal(0, 0.1, 16).astype(np.float32),
        "gamma": rng.uniform(0.5, 1.5, 16).astype(np.float32),
        "beta": rng.normal(0, 0.1, 16).astype(np.float32),
        "mean": rng.normal(0, 0.1, 16).astype(np.float32),
        "var": rng.uniform(0.5, 1.5, 16).astype(np.float32),
        "d1": rng.normal(0, 0.1, (4 * 4 * 16, 32)).astype(np.float32),   # Dense kernel (n, K)
        "db1": rng.normal(0, 0.1, 32).astype(np.float32),
        "d2": rng.normal(0, 0.2, (32, 10)).astype(np.float32),
        "db2": rng.normal(0, 0.1, 10).astype(np.float32),
    }


def tf2onnx_keras_cnn(optimized=True, seed=0):
    """What tf2onnx writes for this Keras model (opset 13, IR 7, NHWC input with a symbolic
    batch named unk__N, Keras's layer names)::

        keras.Sequential([keras.Input((12, 12, 3)),
                          layers.Conv2D(8, 3, padding="same", activation="relu"),
                          layers.MaxPooling2D(),
                          layers.Conv2D(16, 3, activation="relu"),
                          layers.BatchNormalization(),
                          layers.Flatten(),
                          layers.Dense(32, activation="relu"),
                          layers.Dropout(0.5),
                          layers.Dense(10, activation="softmax")])

    tf2onnx converts each NHWC op as Transpose(perm=[0, 3, 1, 2]) -> op -> Transpose(perm=[0, 2,
    3, 1]), Conv2D's BiasAdd as an Add of the bias, Flatten as a Reshape to [-1, n] of the NHWC
    tensor, Dense as MatMul + Add, Dropout as Identity (tf2onnx's nn.py, tensor.py). Its
    optimizers (on by default) then cancel the Transpose pairs between NCHW ops and fuse the
    BiasAdd into the Conv: ``optimized=False`` is the graph before them."""
    w = _keras_weights(np.random.default_rng(seed))
    P = "StatefulPartitionedCall/sequential/"
    inits = [tensor(f"{P}{k}", v) for k, v in w.items()]
    inits.append(tensor(f"{P}flatten/Const", np.array([-1, 256], np.int64)))
    T = lambda i, o, perm, name: helper.make_node("Transpose", [i], [o], name=name, perm=perm)  # noqa: E731
    nodes = []
    if optimized:
        nodes += [
            T("input_1", "t0", [0, 3, 1, 2], f"{P}conv2d/BiasAdd__6"),
            helper.make_node("Conv", ["t0", f"{P}k1", f"{P}b1"], ["c1"], name=f"{P}conv2d/BiasAdd",
                             dilations=[1, 1], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                             strides=[1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"], name=f"{P}conv2d/Relu"),
            helper.make_node("MaxPool", ["r1"], ["p1"], name=f"{P}max_pooling2d/MaxPool",
                             kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Conv", ["p1", f"{P}k2", f"{P}b2"], ["c2"],
                             name=f"{P}conv2d_1/BiasAdd", dilations=[1, 1], kernel_shape=[3, 3],
                             strides=[1, 1]),
            helper.make_node("Relu", ["c2"], ["r2"], name=f"{P}conv2d_1/Relu"),
            helper.make_node("BatchNormalization", ["r2", f"{P}gamma", f"{P}beta", f"{P}mean",
                                                    f"{P}var"], ["bn"],
                             name=f"{P}batch_normalization/FusedBatchNormV3", epsilon=0.001),
            T("bn", "bn_t", [0, 2, 3, 1], f"{P}batch_normalization/FusedBatchNormV3__20"),
        ]
    else:
        nodes += [
            T("input_1", "t0", [0, 3, 1, 2], f"{P}conv2d/Conv2D__6"),
            helper.make_node("Conv", ["t0", f"{P}k1"], ["c1"], name=f"{P}conv2d/Conv2D",
                             dilations=[1, 1], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                             strides=[1, 1]),
            T("c1", "c1_t", [0, 2, 3, 1], f"{P}conv2d/Conv2D__7"),
            helper.make_node("Add", ["c1_t", f"{P}b1"], ["a1"], name=f"{P}conv2d/BiasAdd"),
            helper.make_node("Relu", ["a1"], ["r1"], name=f"{P}conv2d/Relu"),
            T("r1", "r1_t", [0, 3, 1, 2], f"{P}max_pooling2d/MaxPool__9"),
            helper.make_node("MaxPool", ["r1_t"], ["p1"], name=f"{P}max_pooling2d/MaxPool",
                             kernel_shape=[2, 2], strides=[2, 2]),
            T("p1", "p1_t", [0, 2, 3, 1], f"{P}max_pooling2d/MaxPool__10"),
            T("p1_t", "p1_tt", [0, 3, 1, 2], f"{P}conv2d_1/Conv2D__12"),
            helper.make_node("Conv", ["p1_tt", f"{P}k2"], ["c2"], name=f"{P}conv2d_1/Conv2D",
                             dilations=[1, 1], kernel_shape=[3, 3], strides=[1, 1]),
            T("c2", "c2_t", [0, 2, 3, 1], f"{P}conv2d_1/Conv2D__13"),
            helper.make_node("Add", ["c2_t", f"{P}b2"], ["a2"], name=f"{P}conv2d_1/BiasAdd"),
            helper.make_node("Relu", ["a2"], ["r2"], name=f"{P}conv2d_1/Relu"),
            T("r2", "r2_t", [0, 3, 1, 2], f"{P}batch_normalization/FusedBatchNormV3__15"),
            helper.make_node("BatchNormalization", ["r2_t", f"{P}gamma", f"{P}beta", f"{P}mean",
                                                    f"{P}var"], ["bn"],
                             name=f"{P}batch_normalization/FusedBatchNormV3", epsilon=0.001),
            T("bn", "bn_t", [0, 2, 3, 1], f"{P}batch_normalization/FusedBatchNormV3__16"),
        ]
    nodes += [
        helper.make_node("Reshape", ["bn_t", f"{P}flatten/Const"], ["flat"],
                         name=f"{P}flatten/Reshape"),
        helper.make_node("MatMul", ["flat", f"{P}d1"], ["m1"], name=f"{P}dense/MatMul"),
        helper.make_node("Add", ["m1", f"{P}db1"], ["m1b"], name=f"{P}dense/BiasAdd"),
        helper.make_node("Relu", ["m1b"], ["m1r"], name=f"{P}dense/Relu"),
        helper.make_node("Identity", ["m1r"], ["drop"], name=f"{P}dropout/Identity"),
        helper.make_node("MatMul", ["drop", f"{P}d2"], ["m2"], name=f"{P}dense_1/MatMul"),
        helper.make_node("Add", ["m2", f"{P}db2"], ["m2b"], name=f"{P}dense_1/BiasAdd"),
        helper.make_node("Softmax", ["m2b"], ["dense_1"], name=f"{P}dense_1/Softmax"),
    ]
    x = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["unk__18", 12, 12, 3])
    y = helper.make_tensor_value_info("dense_1", TensorProto.FLOAT, ["unk__19", 10])
    return make_model(nodes, inits, [x], [y], opset=13, ir=7, producer_name="tf2onnx",
                      producer_version="1.16.1 15c810")


@pytest.mark.parametrize("optimized", [True, False])
def test_tf2onnx_keras_sequential_cnn(optimized, tmp_path):
    model = tf2onnx_keras_cnn(optimized)
    onnx.checker.check_model(model, full_check=True)
    path = save(model, tmp_path / "keras.onnx")
    m = read_onnx(path)
    assert m.net.spec == ("INPUT(12x12x3) -> CONV(8,F=3,P=1) -> RELU -> POOL -> CONV(16,F=3) -> "
                          "RELU -> BN(eps=0.001) -> FLATTEN -> FC(32) -> RELU -> FC(10)")
    assert m.layout == "NHWC" and m.softmax
    assert agreement(m, path) <= TOL
    # NHWC flatten: Keras's order is convnet's, the Dense kernel is the FC's W as it is
    w = _keras_weights(np.random.default_rng(0))
    assert np.array_equal(m.net["fc1"].params["W"], w["d1"])
    if not optimized:   # the BiasAdds became the CONVs' biases
        assert np.array_equal(m.net["conv1"].params["b"], w["b1"])
        assert any("taken as its bias" in n for n in m.notes)


def tf2onnx_gap_depthwise(seed=0):
    """tf2onnx for ``Input((9, 9, 4)) -> DepthwiseConv2D(3, depth_multiplier=2,
    padding='same') -> ReLU(max_value=6) -> Conv2D(6, 1) -> GlobalAveragePooling2D() ->
    Dense(3)``: Clip(0, 6) for ReLU6, ReduceMean over axes 1, 2 of the NHWC tensor (keepdims
    0) for the global pool, and symbolic H and W where the Input leaves them open."""
    rng = np.random.default_rng(seed)
    inits = [tensor("dw", rng.normal(0, 0.3, (8, 1, 3, 3)).astype(np.float32)),
             tensor("dwb", rng.normal(0, 0.1, 8).astype(np.float32)),
             tensor("lo", np.array(0, np.float32)), tensor("hi", np.array(6, np.float32)),
             tensor("pw", rng.normal(0, 0.3, (6, 8, 1, 1)).astype(np.float32)),
             tensor("pwb", rng.normal(0, 0.1, 6).astype(np.float32)),
             tensor("axes", np.array([1, 2], np.int64)),
             tensor("d", rng.normal(0, 0.3, (6, 3)).astype(np.float32)),
             tensor("db", rng.normal(0, 0.1, 3).astype(np.float32))]
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2], name="dw__3"),
        helper.make_node("Conv", ["xt", "dw", "dwb"], ["c"], group=4, kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], name="dw"),
        helper.make_node("Clip", ["c", "lo", "hi"], ["r"], name="re_lu/Relu6"),
        helper.make_node("Conv", ["r", "pw", "pwb"], ["c2"], kernel_shape=[1, 1], name="conv"),
        helper.make_node("Transpose", ["c2"], ["c2t"], perm=[0, 2, 3, 1], name="conv__5"),
        helper.make_node("ReduceMean", ["c2t", "axes"], ["g"], keepdims=0, name="gap/Mean"),
        helper.make_node("MatMul", ["g", "d"], ["m"], name="dense/MatMul"),
        helper.make_node("Add", ["m", "db"], ["y"], name="dense/BiasAdd"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["unk__1", "unk__2", "unk__3", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["unk__4", 3])
    return make_model(nodes, inits, [x], [y], opset=18, ir=8, producer_name="tf2onnx")


def test_tf2onnx_depthwise_relu6_global_pool_symbolic_size(tmp_path):
    path = save(tf2onnx_gap_depthwise(), tmp_path / "dw.onnx")
    msg = refusal(path)
    assert msg == ("dw.onnx: the graph's input 'x' has a symbolic size ?x?x4 (H x W x D): say "
                   "which to use (convnet import --input 224x224x3, or input_shape=(224, 224, "
                   "3))")
    m = read_onnx(path, (9, 9, 4))
    assert m.net.spec == ("INPUT(9x9x4) -> DWCONV(F=3,P=1,multiplier=2) -> RELU6 -> CONV(6,F=1) "
                          "-> GAP -> FC(3)")
    assert agreement(m, path) <= TOL


def test_keras_same_padding_at_stride_2_is_refused(tmp_path):
    # tf2onnx's explicit pads for padding='same', stride 2 on an even size: one more after
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["xt", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[0, 0, 1, 1], name="StatefulPartitionedCall/conv2d/Conv2D")]
    model = make_model(nodes, [tensor("w", rng.random((2, 1, 3, 3), dtype=np.float32))],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 1])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    assert refusal(save(model, tmp_path / "k.onnx")) == (
        "k.onnx: node 'StatefulPartitionedCall/conv2d/Conv2D' (Conv): asymmetric padding "
        "[0, 0, 1, 1] ([top, left, bottom, right]): 0 row(s) above and 1 below. convnet's P "
        "pads both sides of an axis equally. Re-export with symmetric padding: 'same' padding is "
        "symmetric for an odd kernel at stride 1, but pads one side more for an even kernel, or "
        "(Keras) at stride 2 on an even size; pad explicitly instead (ZeroPadding2D, "
        "nn.ZeroPad2d) and use padding='valid'")


def test_pad_then_conv_is_one_padded_conv_and_zero_pad_before_maxpool_after_relu(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["xp"], mode="constant", name="pad"),
        helper.make_node("Conv", ["xp", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         name="conv"),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Pad", ["r", "pads1"], ["rp"], name="pad2"),
        helper.make_node("MaxPool", ["rp"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                         name="pool"),
    ]
    inits = [tensor("pads", np.array([0, 0, 1, 2, 0, 0, 1, 2], np.int64)),
             tensor("pads1", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
             tensor("w", rng.normal(0, 1, (4, 2, 3, 3)).astype(np.float32)),
             tensor("b", rng.normal(0, 1, 4).astype(np.float32))]
    model = make_model(nodes, inits,
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 7, 5])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = save(model, tmp_path / "pad.onnx")
    m = read_onnx(path)
    assert m.net.spec == "INPUT(7x5x2) -> CONV(4,F=3,P=2x3) -> RELU -> POOL(F=3,S=2,P=1)"
    assert agreement(m, path) <= TOL
    # without the RELU the padded zeros can win a window: refused
    model.graph.node.remove(model.graph.node[2])
    model.graph.node[2].input[0] = "c"
    assert "a zero Pad before a max pool: the padded zeros can be the maximum" in refusal(
        save(model, tmp_path / "pad2.onnx"))


def test_initializers_listed_as_graph_inputs_are_weights(tmp_path):
    # IR < 4 files (older exporters) list every initializer among the graph's inputs too
    net = randomize(cn.build("INPUT(6x6x2) -> CONV(3,F=3) -> BN -> RELU -> FC(4)", seed=0))
    model = to_model(net)
    for t in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, t.dims))
    m = read_onnx(save(model, tmp_path / "old.onnx"))
    x = np.random.default_rng(0).random((2, 6, 6, 2), dtype=np.float32)
    same_network(net, m.net, x)


def test_a_symbolic_batch_computed_by_shape_arithmetic_is_a_flatten(tmp_path):
    # x.view(x.size(0), -1) as the TorchScript exporter writes it with a dynamic batch
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], name="conv"),
             helper.make_node("Shape", ["c"], ["s"]),
             helper.make_node("Constant", [], ["i0"], value=tensor("v", np.array(0, np.int64))),
             helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["c", "shape"], ["flat"], name="view"),
             helper.make_node("Gemm", ["flat", "fw", "fb"], ["y"], transB=1, name="fc")]
    inits = [tensor("w", rng.normal(0, 1, (3, 2, 3, 3)).astype(np.float32)),
             tensor("ax", np.array([0], np.int64)), tensor("minus1", np.array([-1], np.int64)),
             tensor("fw", rng.normal(0, 1, (4, 48)).astype(np.float32)),
             tensor("fb", rng.normal(0, 1, 4).astype(np.float32))]
    model = make_model(nodes, inits,
                       [helper.make_tensor_value_info("x", 1, ["batch", 2, 6, 6])],
                       [helper.make_tensor_value_info("y", 1, ["batch", 4])])
    path = save(model, tmp_path / "view.onnx")
    m = read_onnx(path)
    assert m.net.spec == "INPUT(6x6x2) -> CONV(3,F=3,bias=false) -> FC(4)"
    assert agreement(m, path) <= TOL


# ----------------------------------------------------------------------- refusals, exactly
def _one(op, attrs=None, extra_inputs=(), inits=(), shape=(1, 2, 6, 6), name="n", outputs=1):
    nodes = [helper.make_node(op, ["x", *extra_inputs], [f"y{i}" if i else "y"
                                                          for i in range(outputs)],
                              name=name, **(attrs or {}))]
    return make_model(nodes, list(inits),
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])


W4 = tensor("w", np.ones((2, 2, 3, 3), np.float32))
REFUSALS = {
    "unsupported": (_one("Erf"), "f.onnx: node 'n' (Erf): Erf is not an operator convnet can "
                                 "import. Operators it reads: "),
    "auto_pad_odd": (_one("Conv", {"auto_pad": "SAME_UPPER", "kernel_shape": [2, 2]}, ["w2"],
                          [tensor("w2", np.ones((2, 2, 2, 2), np.float32))]),
                     "f.onnx: node 'n' (Conv): auto_pad=SAME_UPPER pads the rows by 1 in all "
                     "(ceil(6/1) outputs with F=2, S=1), an odd total: one side would get 0 and "
                     "the other 1. convnet pads both sides equally: re-export with explicit "
                     "symmetric pads (e.g. an odd input size, or padding='same' at stride 1 "
                     "with an odd kernel)"),
    "ceil_mode": (_one("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
                  "f.onnx: node 'n' (MaxPool): ceil_mode=1 adds a last window that sticks out "
                  "of the padded rows: ceil((6 + 2*0 - 3)/2) + 1 = 3, where convnet's windows "
                  "give 2. That window reads padding on one side only, which convnet's "
                  "symmetric P cannot express; re-export with ceil_mode=False (or pad the input "
                  "so that the stride fits)"),
    "count_include_pad": (_one("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
                          "f.onnx: node 'n' (AveragePool): count_include_pad=0 with padding: a "
                          "window at the border is divided by its cells inside the image, where "
                          "convnet's AVGPOOL counts the padded zeros in the mean (PyTorch's "
                          "default, count_include_pad=True)"),
    "clip": (_one("Clip", {}, ["lo", "hi"], [tensor("lo", np.float32(0)),
                                              tensor("hi", np.float32(1))]),
             "f.onnx: node 'n' (Clip): Clip(min=0.0, max=1.0) is not a convnet activation: "
             "convnet has RELU6 = Clip(0, 6) and RELU = Clip(0, inf)"),
    "grouped_deconv": (_one("ConvTranspose", {"group": 2}, ["w"], [W4]),
                       "f.onnx: node 'n' (ConvTranspose): group=2: a grouped transposed "
                       "convolution has no convnet layer (DECONV mixes all input slices)"),
    "custom_domain": (make_model([helper.make_node("Relu", ["x"], ["y"], name="n",
                                                   domain="com.example")], [],
                                 [helper.make_tensor_value_info("x", 1, [1, 4])],
                                 [helper.make_tensor_value_info("y", 1, None)]),
                      "f.onnx: node 'n' (Relu): an operator of domain 'com.example', not a "
                      "standard ONNX one: convnet cannot import it"),
    "weights_computed": (make_model([helper.make_node("Relu", ["x"], ["w2"]),
                                     helper.make_node("Conv", ["x", "w2"], ["y"], name="n")],
                                    [], [helper.make_tensor_value_info("x", 1, [2, 2, 3, 3])],
                                    [helper.make_tensor_value_info("y", 1, None)]),
                         "f.onnx: node 'n' (Conv): its W input 'w2' is computed by the graph, "
                         "not stored: convnet imports stored weights only"),
    "two_inputs": (make_model([helper.make_node("Add", ["x", "z"], ["y"], name="n")], [],
                              [helper.make_tensor_value_info("x", 1, [1, 4]),
                               helper.make_tensor_value_info("z", 1, [1, 4])],
                              [helper.make_tensor_value_info("y", 1, None)]),
                   "f.onnx: the graph has 2 input(s) and 1 output(s); a convnet network has one "
                   "of each (inputs: x, z)"),
    "mul_inside": (make_model([helper.make_node("Relu", ["x"], ["r"]),
                               helper.make_node("Mul", ["r", "k"], ["y"], name="n")],
                              [tensor("k", np.float32(2))],
                              [helper.make_tensor_value_info("x", 1, [1, 4])],
                              [helper.make_tensor_value_info("y", 1, None)]),
                   "f.onnx: node 'n' (Mul): arithmetic with a constant inside the network: "
                   "convnet reads a Sub, Mul or Div only at the start (a normalisation)"),
    "reshape_4d": (_one("Reshape", {}, ["s"], [tensor("s", np.array([1, 2, 36, 1], np.int64))]),
                   "f.onnx: node 'n' (Reshape): Reshape of (N, 2, 6, 6) to [1, 2, 36, 1]: "
                   "convnet reads a Reshape that flattens (N, ...) to (N, n) only"),
    "softmax_inside": (make_model([helper.make_node("Softmax", ["x"], ["s"], name="n"),
                                   helper.make_node("Relu", ["s"], ["y"])], [],
                                  [helper.make_tensor_value_info("x", 1, [1, 4])],
                                  [helper.make_tensor_value_info("y", 1, None)]),
                       "f.onnx: node 'n' (Softmax): a Softmax inside the network: convnet "
                       "applies softmax to its output scores only (where it shows "
                       "probabilities)"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_name_the_node_and_say_why(case, tmp_path):
    model, text = REFUSALS[case]
    msg = refusal(save(model, tmp_path / "f.onnx"))
    assert msg.startswith(text) if case == "unsupported" else msg == text


def test_wiring_that_is_not_res_cat_blocks_is_refused(tmp_path):
    # a DenseNet-style concatenation of a block's input with its output
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              name="conv"),
             helper.make_node("Concat", ["x", "c"], ["y"], axis=1, name="cat")]
    model = make_model(nodes, [tensor("w", rng.random((2, 2, 3, 3), dtype=np.float32))],
                       [helper.make_tensor_value_info("x", 1, [1, 2, 6, 6])],
                       [helper.make_tensor_value_info("y", 1, None)])
    assert refusal(save(model, tmp_path / "f.onnx")) == (
        "f.onnx: cat (CAT) concatenates the block's input itself: write the branch as a layer "
        "(e.g. a 1x1 CONV) to keep it")


def test_nothing_is_half_imported_by_the_cli(tmp_path, capsys):
    from convnet.cli.main import main

    path = save(REFUSALS["clip"][0], tmp_path / "f.onnx")
    out = tmp_path / "out.npz"
    assert main(["import", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"convnet import: error: {REFUSALS['clip'][1]}"
    assert not out.exists()


# ---------------------------------------------------------------------------- hostile files
def _conv_model(w_tensor, shape=(1, 2, 6, 6)):
    return make_model([helper.make_node("Conv", ["x", w_tensor.name], ["y"], name="conv")],
                      [w_tensor], [helper.make_tensor_value_info("x", 1, list(shape))],
                      [helper.make_tensor_value_info("y", 1, None)])


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_huge_declared_dims_refused_without_allocating(tmp_path):
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[100_000, 100_000, 3, 3],
                    raw_data=b"\0" * 16)
    path = save(_conv_model(t), tmp_path / "f.onnx")
    msg = []
    peak = _peak(lambda: msg.append(refusal(path)))
    assert msg[0] == ("f.onnx: initializer 'w': declares [100000, 100000, 3, 3] = "
                      "90,000,000,000 values, more than the 1,000,000,000 a convnet network may "
                      "hold; refused")
    assert peak < 5_000_000
    # a graph input of a size no image has
    model = _conv_model(tensor("w", np.ones((2, 2, 3, 3), np.float32)),
                        shape=(1, 2, 10**9, 10**9))
    assert refusal(save(model, tmp_path / "g.onnx")) == (
        "g.onnx: the graph's input: input_shape=(1000000000, 1000000000, 2) must be (H, W, D) "
        "for images or (n,) for vectors, with whole numbers between 1 and 100,000")


@pytest.mark.parametrize("op, a, b", [
    ("Add", (5000, 1), (1, 5000)),            # a broadcast of 25,000,000 values
    ("Gather", (10, 5000), (5000,)),          # 5,000 rows of 5,000 picked from a small table
])
def test_a_folded_constant_is_sized_before_it_is_made(op, a, b, tmp_path):
    dt = np.int64 if op == "Gather" else np.float32
    inits = [tensor("w", np.ones((2, 2, 3, 3), np.float32)), tensor("a", np.ones(a, np.float32)),
             tensor("b", np.zeros(b, dt))]
    nodes = [helper.make_node(op, ["a", "b"], ["k"], name="big"),
             helper.make_node("Reshape", ["x", "k"], ["r"], name="r"),
             helper.make_node("Conv", ["r", "w"], ["y"], name="conv")]
    model = make_model(nodes, inits, [helper.make_tensor_value_info("x", 1, [1, 2, 6, 6])],
                       [helper.make_tensor_value_info("y", 1, None)])
    path = save(model, tmp_path / "f.onnx")
    msg = []
    peak = _peak(lambda: msg.append(refusal(path)))
    assert msg[0] == (f"f.onnx: node 'big' ({op}): computes 25,000,000 values, more than the "
                      "10,000,000 convnet folds; refused"), msg
    assert peak < 20_000_000  # the inputs are 0.2 MB; the result would be 100 or 200 MB


def test_initializer_shorter_than_its_shape_is_refused(tmp_path):
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 2, 3, 3],
                    raw_data=b"\0" * 100)
    assert refusal(save(_conv_model(t), tmp_path / "f.onnx")) == (
        "f.onnx: initializer 'w': raw data of 100 bytes for [2, 2, 3, 3] FLOAT (144 bytes); "
        "refused")
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 2, 3, 3], float_data=[1.0])
    assert refusal(save(_conv_model(t), tmp_path / "g.onnx")) == (
        "g.onnx: initializer 'w': 1 values in float_data for [2, 2, 3, 3] (36 values); refused")


def test_cycle_and_missing_input_are_refused(tmp_path):
    cyc = make_model([helper.make_node("Relu", ["x", ], ["a"]),
                      helper.make_node("Add", ["a", "c"], ["b"], name="add"),
                      helper.make_node("Relu", ["b"], ["c"], name="relu2"),
                      helper.make_node("Relu", ["c"], ["y"])], [],
                     [helper.make_tensor_value_info("x", 1, [1, 4])],
                     [helper.make_tensor_value_info("y", 1, None)])
    assert refusal(save(cyc, tmp_path / "c.onnx")) == (
        "c.onnx: the graph has a cycle (nodes 'add', 'relu2', 'y' read each other's outputs): "
        "a network is acyclic")
    missing = make_model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add")], [],
                         [helper.make_tensor_value_info("x", 1, [1, 4])],
                         [helper.make_tensor_value_info("y", 1, None)])
    assert refusal(save(missing, tmp_path / "m.onnx")) == (
        "m.onnx: node 'add' (Add) reads 'ghost', which no node, initializer or graph input "
        "defines")


def _external_model(location, offset=0, length=144):
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 2, 3, 3],
                    data_location=TensorProto.EXTERNAL)
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        t.external_data.add(key=k, value=v)
    return _conv_model(t)


def test_external_data_outside_the_models_directory_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(36, np.float32).tobytes())
    d = tmp_path / "model"
    d.mkdir()
    for loc in ("../secret.bin", str(secret), "sub/../../secret.bin"):
        msg = refusal(save(_external_model(loc), d / "f.onnx"))
        assert msg == (f"f.onnx: initializer 'w': external data location {loc!r} is not a file "
                       "name inside the model's directory; refused"), msg
    (d / "link.bin").symlink_to(secret)
    assert refusal(save(_external_model("link.bin"), d / "f.onnx")) == (
        "f.onnx: initializer 'w': external data location 'link.bin' leads outside the model's "
        "directory (a link?); refused")
    (d / "w.bin").write_bytes(np.ones(36, np.float32).tobytes())
    assert refusal(save(_external_model("w.bin", length=64), d / "f.onnx")) == (
        "f.onnx: initializer 'w': external data holds 64 bytes for [2, 2, 3, 3] FLOAT (144 "
        "bytes); refused")
    m = read_onnx(save(_external_model("w.bin"), d / "f.onnx"))     # inside: read
    assert np.array_equal(m.net.layers[0].params["W"], np.ones((2, 3, 3, 2), np.float32))


def test_size_cap_and_garbage_are_refused(tmp_path):
    path = export_onnx(cn.build("INPUT(4x4x1) -> FC(3)", seed=0), tmp_path / "m.onnx")
    size = path.stat().st_size
    assert refusal(path, max_bytes=100) == (
        f"m.onnx: {size:,} bytes, more than the 100 an ONNX protobuf may have here; a larger "
        "model keeps its weights as external data beside the .onnx file")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xfe not a protobuf" * 10)
    assert refusal(bad).startswith("bad.onnx: not an ONNX model (the protobuf does not parse")


def test_the_checkpoint_cap_and_regular_files_apply_to_onnx(tmp_path, monkeypatch, capsys):
    import os
    import threading

    from convnet.cli.main import main
    from convnet.safety import caps

    path = export_onnx(cn.build("INPUT(4x4x1) -> FC(3)", seed=0), tmp_path / "m.onnx")
    size = path.stat().st_size
    with caps(checkpoint_bytes=100):
        msg = refusal(path)
    assert f"the ONNX model is {size:,} bytes, over the limit of 100 bytes" in msg
    assert "--max-checkpoint-bytes" in msg
    # external data counts too: 144 bytes declared beside a small protobuf
    d = tmp_path / "ext"
    d.mkdir()
    (d / "w.bin").write_bytes(np.ones(36, np.float32).tobytes())
    f = save(_external_model("w.bin"), d / "f.onnx")
    with caps(checkpoint_bytes=f.stat().st_size + 100):
        assert "the ONNX model with its external data is" in refusal(f)
    # the CLI flag reaches it: one line, exit 2
    assert main(["import", str(path), "-o", str(tmp_path / "m.npz"),
                 "--max-checkpoint-bytes", "100"]) == 2
    assert "over the limit of 100 bytes" in capsys.readouterr().err
    # a FIFO (and an external data file that is one) is refused, never waited on
    fifo = tmp_path / "p.onnx"
    os.mkfifo(fifo)
    box = []
    t = threading.Thread(target=lambda: box.append(refusal(fifo)), daemon=True)
    t.start()
    t.join(20)
    assert box and "FIFO" in box[0], box


@st.composite
def mutations(draw):
    """A small valid model with one attribute or initializer changed at random."""
    net = cn.build("INPUT(6x6x2) -> CONV(4,F=3,P=1) -> BN -> RELU -> POOL -> CONV(4,F=1) -> "
                   "RES[CONV(4,F=3,P=1)] -> GAP -> FC(3)", seed=0)
    model = to_model(net)
    nodes = list(model.graph.node)
    n = nodes[draw(st.integers(0, len(nodes) - 1))]
    what = draw(st.sampled_from(["attr", "init", "input"]))
    ints = st.lists(st.integers(-3, 9), max_size=6)
    if what == "attr" and n.attribute:
        a = n.attribute[draw(st.integers(0, len(n.attribute) - 1))]
        if a.type == onnx.AttributeProto.INTS:
            del a.ints[:]
            a.ints.extend(draw(ints))
        elif a.type == onnx.AttributeProto.INT:
            a.i = draw(st.integers(-3, 9))
        elif a.type == onnx.AttributeProto.FLOAT:
            a.f = draw(st.floats(allow_nan=True))
    elif what == "init":
        t = model.graph.initializer[draw(st.integers(0, len(model.graph.initializer) - 1))]
        del t.dims[:]
        t.dims.extend(draw(st.lists(st.integers(0, 20), max_size=5)))
    else:
        n.input[0] = draw(st.sampled_from(["input", "output", "", "conv1", "fc1.W"]))
    return model


@settings(max_examples=60, deadline=None)
@given(mutations())
def test_a_mutated_file_is_read_or_refused_never_a_crash(tmp_path_factory, model):
    path = save(model, tmp_path_factory.mktemp("mut") / "m.onnx")
    try:
        read_onnx(path)
    except cn.ConvnetError:
        pass


# ------------------------------------------------------------------- the optional extras
def test_core_does_not_import_onnx_and_a_missing_extra_is_one_line(monkeypatch):
    code = ("import sys, convnet as cn; cn.build('digits', seed=0); "
            "print(any(m.split('.')[0] in ('onnx', 'onnxruntime', 'torch') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    import importlib

    from convnet.interop import require

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "onnx":
            raise ImportError("No module named 'onnx'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ConfigError) as e:
        require("onnx")
    assert str(e.value) == ("this needs the Python package 'onnx', which is not installed: "
                            "pip install 'convnet[onnx]'")


def test_exported_file_follows_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = export_onnx(cn.build("INPUT(4x4x1) -> FC(3)", seed=0), tmp_path / "m.onnx")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
