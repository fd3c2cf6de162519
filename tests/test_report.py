"""summary and explain: the numbers of the seeds and the zoo, every format, failures explained."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

import convnet as cn
from convnet.errors import ConfigError, ShapeError, SpecError
from convnet.report import load_network, parse_input_shape
from convnet.report.explain import derive, explain
from convnet.report.summary import structure, summary

SEED004 = "seed004"
CS231N = "INPUT(32x32x3) -> CONV(10,F=5,S=1,P=2)"


def _json(source, **kw):
    return json.loads(summary(source, format="json", **kw))


# ---------------------------------------------------------------------------- summary
def test_vgg16_is_instant_and_exact(monkeypatch):
    # summary must never allocate weights: make any allocation by a layer fail loudly
    monkeypatch.setattr(cn.layers.base.Layer, "build",
                        lambda *a, **k: pytest.fail("summary allocated weights"))
    text = summary("vgg16")
    assert "Parameters: 138,357,544" in text
    assert "MACs per image: 15,470,264,320 (FLOPs = 2 x MACs = 30,940,528,640)" in text
    doc = _json("vgg16")
    assert doc["totals"]["params"] == 138_357_544
    assert doc["totals"]["flops"] == 2 * doc["totals"]["macs"]
    fc1 = next(layer for layer in doc["layers"] if layer["name"] == "fc1")
    assert fc1["params"] == 102_764_544 and fc1["input_shape"] == [7, 7, 512]


def test_json_numbers_match_the_network():
    net = cn.build("cifar10", weights=False)
    doc = _json(net, batch=8)
    assert doc["totals"]["params"] == net.num_params
    assert [tuple(layer["output_shape"]) for layer in doc["layers"]] == net.shapes
    acts = sum(layer["activation_bytes"] for layer in doc["layers"]) + doc["input_bytes"]
    mem = doc["totals"]["training_memory_bytes"]
    assert mem["activations"] == acts
    assert mem["params"] == mem["grads"] == net.num_params * 4
    assert mem["total"] == mem["params"] + mem["grads"] + mem["optimizer"] + mem["activations"]
    assert doc["input_bytes"] == 32 * 32 * 3 * 8 * 4
    assert "not counted" in doc["notes"]["memory"]


def test_seed004_shapes_in_every_format():
    doc = _json(SEED004)
    shapes = [layer["output_shape"] for layer in doc["layers"] if layer["kind"] != "RELU"]
    assert shapes == [[28, 28, 3], [14, 14, 3], [10, 10, 6], [5, 5, 6], [100], [10]]
    fc1 = next(layer for layer in doc["layers"] if layer["name"] == "fc1")
    assert fc1["input_shape"] == [5, 5, 6] and fc1["params"] == 150 * 100 + 100
    rows = list(csv.DictReader(io.StringIO(summary(SEED004, format="csv"))))
    assert list(rows[0]) == ["index", "layer", "spec", "output", "params", "macs", "rf_size",
                             "rf_stride", "activation_bytes"]
    assert [r["output"] for r in rows[1:] if r["layer"].startswith(("conv", "pool"))] == \
        ["28x28x3", "14x14x3", "10x10x6", "5x5x6"]
    assert rows[-1]["layer"] == "total" and int(rows[-1]["params"]) == doc["totals"]["params"]
    md = summary(SEED004, format="markdown")
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in table}) == 1  # every row has the same columns
    assert "| 4 | conv2 | CONV(6,F=5) | 10x10x6 | 456 |" in md
    text = summary(SEED004)
    assert "5x5x6" in text and "Training memory at batch 1" in text


def test_cs231n_example_and_batch():
    doc = _json(CS231N, batch=4)
    layer = doc["layers"][0]
    assert layer["output_shape"] == [32, 32, 10] and layer["params"] == 760
    assert layer["macs"] == 32 * 32 * 10 * 75
    assert layer["activation_bytes"] == 32 * 32 * 10 * 4 * 4
    assert layer["receptive_field"] == {"size": [5, 5], "stride": [1, 1], "start": [0, 0],
                                        "whole_input": False}


def test_input_override_and_sources(tmp_path):
    doc = _json("fcn", input_shape=(64, 64, 1))
    assert doc["input_shape"] == [64, 64, 1] and doc["output_shape"] == [10]
    spec_file = tmp_path / "net.spec"
    spec_file.write_text("# the seeds' example\n" + CS231N + "\n")
    assert _json(str(spec_file))["totals"]["params"] == 760
    net = cn.build(CS231N, seed=0)
    assert load_network(net) is net
    assert load_network(net, (16, 16, 3)).output_shape == (16, 16, 10)
    assert parse_input_shape(" 224x224x3 ") == (224, 224, 3) and parse_input_shape("64") == (64,)
    with pytest.raises(ConfigError, match="HxWxD"):
        parse_input_shape("3x3")


def test_saved_model(tmp_path):
    from convnet.train import checkpoint

    net = cn.build("INPUT(8x8x1) -> CONV(4,F=3,P=1) -> RELU -> POOL -> FC(10)", seed=0)
    path = tmp_path / "model.npz"
    checkpoint.save(net, path)
    assert _json(str(path))["totals"]["params"] == net.num_params
    assert "4x4x4 -> 64" in explain(str(path))


def test_bad_arguments():
    with pytest.raises(ConfigError, match="format='xml'"):
        summary(CS231N, format="xml")
    with pytest.raises(ConfigError, match="batch=0"):
        summary(CS231N, batch=0)
    with pytest.raises(SpecError):
        summary("INPUT(32x32x3) -> CONV(10,F=5")
    with pytest.raises(ShapeError, match="stride 3 does not fit"):
        summary("INPUT(7x7x1) -> CONV(1,F=3,S=3)")


def test_deconv_receptive_field_in_json():
    doc = _json("INPUT(9x9x1) -> CONV(2,F=3,S=2,P=1) -> DECONV(1,F=3,S=2,P=1)")
    conv, deconv = doc["layers"]
    assert conv["receptive_field"]["stride"] == [2, 2]
    assert deconv["output_shape"] == [9, 9, 1]
    assert deconv["receptive_field"]["stride"] == [1, 1]
    assert deconv["receptive_field"]["size"] == [5, 5]  # 3 + (3 - 1)*1


# ---------------------------------------------------------------------------- explain
def test_explain_alexnet_first_layer():
    text = explain("alexnet")
    block = text.split("\n\n")[1]
    assert block.startswith("conv1: CONV(96,F=11,S=4)   227x227x3 -> 55x55x96")
    for fact in ("(227 - 11 + 2*0)/4 + 1 = 55", "D2 = K = 96", "11x11x3", "11*11*3 = 363 weights",
                 "= 34,944", "105,705,600", "effective stride 4", "each unit sees 11x11"):
        assert fact in " ".join(block.split()), fact


def test_explain_seed_examples():
    text = " ".join(explain(CS231N).split())
    assert "(32 - 5 + 2*2)/1 + 1 = 32" in text and "32x32x10" in text
    assert "5*5*3 = 75 weights" in text and "= 760" in text
    seed = " ".join(explain(SEED004).split())
    assert "5x5x6 volume into 5*5*6 = 150 values (5x5x6 -> 150), in NHWC order" in seed
    assert "each of the 6 depth slices" in seed and "the depth stays 6" in seed
    for shape in ("28x28x3", "14x14x3", "10x10x6", "5x5x6"):
        assert f"-> {shape}" in seed
    seven = " ".join(explain("INPUT(7x7x1) -> CONV(1,F=3,S=2) -> CONV(1,F=3,S=1,P=1)").split())
    assert "(7 - 3 + 2*0)/2 + 1 = 3" in seven and "(3 - 3 + 2*1)/1 + 1 = 3" in seven


def test_explain_vgg16_fully_convolutional():
    text = " ".join(explain("vgg16").split())
    assert ("7x7x512 -> CONV F=7 K=4096 -> CONV F=1 K=4096 -> CONV F=1 K=1000 -> 1x1x1000"
            in text)
    assert "Total: 138,357,544 parameters" in text
    assert "384x384x3 image" in text and "6x6x1000 map of scores" in text


def test_explain_other_layers():
    text = " ".join(explain("INPUT(14x14x8) -> DECONV(4,F=2,S=2) -> BN -> LRELU -> DROPOUT(0.25) "
                            "-> AVGPOOL(F=2) -> GAP").split())
    assert "S(W1 - 1) + F - 2P + a = 2*(14 - 1) + 2 - 2*0 + 0 = 28" in text
    assert "2*2*8*4 + 4 biases = 132 parameters" in text
    assert "2*4 = 8 parameters" in text and "p = 0.25" in text
    assert "mean; the slices are pooled independently" in text
    assert "28x28x4 -> 14x14x4" in text and "14x14x4 -> 4" in text
    assert "no FC layer" in text
    rect = " ".join(explain("INPUT(9x12x1) -> CONV(2,F=3x5,S=(2,1))").split())
    assert "rows (9 - 3 + 2*0)/2 + 1 = 4; columns (12 - 5 + 2*0)/1 + 1 = 8" in rect
    assert "3x5x1" in rect
    dil = " ".join(explain("INPUT(9x9x1) -> CONV(1,F=3,dilation=2)").split())
    assert "F_eff = F + (F - 1)(d - 1) = 5" in dil and "each unit sees 5x5" in dil


def test_explain_failure_is_explained_not_raised():
    result = derive("INPUT(7x7x1) -> CONV(4,F=3) -> RELU -> CONV(8,F=3,S=3) -> FC(10)")
    assert not result.ok and isinstance(result.error, ShapeError)
    text = result.text
    assert "conv1: CONV(4,F=3)   7x7x1 -> 5x5x4" in text  # the layers before it are derived
    assert "conv2: CONV(8,F=3,S=3)   5x5x4 -> does not fit" in text
    flat = " ".join(text.split())
    assert ("(5 - 3 + 2*0)/3 + 1 = 1.67 is not a whole number: stride 3 does not fit. "
            "Strides that fit: 1, 2.") in flat
    assert "Or pad P=2 with S=3 -> 3x3." in flat
    assert "The 1 layer(s) after conv2 cannot be derived" in flat
    assert "Total:" not in text
    assert derive(CS231N).ok


def test_explain_failure_first_layer_and_after_fc():
    result = derive("INPUT(7x7x1) -> CONV(1,F=9)")
    assert not result.ok and "larger than the padded input" in result.text
    result = derive("INPUT(8x8x1) -> FC(10) -> CONV(2,F=3)")
    assert "fc1: FC(10)   8x8x1 -> 10" in result.text
    assert "needs an H x W x D volume" in " ".join(result.text.split())


def test_explain_spec_error_raises():
    with pytest.raises(SpecError):
        explain("INPUT(7x7x1) -> CNV(1,F=3)")


def test_explain_a_network_object_matches_its_spec():
    net = cn.Sequential([cn.Conv(K=6, F=5), cn.ReLU(), cn.MaxPool(), cn.FC(10)],
                        input_shape=(32, 32, 3), seed=0, dtype=np.float64)
    assert explain(net) == explain(net.spec)


def test_top_level_names_are_the_functions():
    import convnet.report.explain  # noqa: F401  (the submodules must not shadow the functions)
    import convnet.report.summary  # noqa: F401

    assert callable(cn.summary) and callable(cn.explain)
    assert "760" in cn.summary(CS231N) and "760" in cn.explain(CS231N)


@pytest.mark.parametrize("name", list(__import__("convnet.spec", fromlist=["ZOO"]).ZOO))
def test_every_zoo_net_summarises_and_explains(name):
    net = cn.build(name, weights=False)
    doc = _json(name)
    assert doc["totals"]["params"] == net.num_params
    result = derive(name)
    assert result.ok and f"Total: {net.num_params:,} parameters" in " ".join(result.text.split())
    # one row per layer (and, for a branching net, one per block and branch that opens), a
    # header, a rule and the input
    assert summary(name, format="markdown").count("\n|") == len(structure(net)) + 3
    assert sum(kind == "layer" for kind, *_ in structure(net)) == len(net.layers)


def test_one_size_limit_for_every_entry_point():
    """issue 20 (8, 11): the same input explains and summarises; sizes are capped as they grow
    (a stack of DECONVs), with one message naming the layer, never an overflow."""
    assert derive("INPUT(100000x1x1) -> FC(10)").ok
    assert "100000x1x1" in summary("INPUT(100000x1x1) -> FC(10)")
    for reps in (100, 1000):
        spec = f"INPUT(8x8x1) -> [DECONV(1,F=1,S=100000)]*{reps}"
        with pytest.raises(ShapeError, match="over the limit of 100,000 for any size"):
            summary(spec)
        with pytest.raises(ShapeError, match="over the limit of 100,000 for any size"):
            cn.build(spec, weights=False)
        result = derive(spec)
        assert not result.ok and "deconv1 (DECONV K=1 F=1 S=100000 P=0)" in str(result.error)
    with pytest.raises(ShapeError, match="fc1 .*over the limit of 100,000"):
        cn.Sequential([cn.FC(10**12)], (4,))
    net = cn.build("INPUT(8x8x1) -> DECONV(1,F=2,S=2)", weights=False)
    with pytest.raises(ShapeError, match="deconv1 .*over the limit"):
        net.shapes_for((60000, 8, 1))
