"""The zoo: every named architecture builds, and its numbers are the published ones."""

from __future__ import annotations

import numpy as np
import pytest

from convnet.errors import SpecError
from convnet.spec import ZOO, build, describe, zoo_names
from convnet.spec.zoo import get


def test_names():
    assert zoo_names() == ["lenet5", "alexnet", "vgg16", "seed004", "fashion", "fashion-bn",
                           "cifar10", "fcn", "segnet", "digits", "resnet-cifar", "resnet18",
                           "resnet34", "resnet50", "mobilenet_v2", "googlenet"]
    for name in zoo_names():
        assert len(describe(name)) > 80
    assert describe("VGG16") == describe("vgg16")


def test_unknown_name():
    with pytest.raises(SpecError, match="no zoo architecture named 'vgg19'. Did you mean 'vgg16'"):
        get("vgg19")
    with pytest.raises(SpecError):
        describe("resnet51")


@pytest.mark.parametrize("name", list(ZOO))
def test_every_entry_builds_and_round_trips(name):
    net = build(name, weights=False)
    expected = {"segnet": (32, 64, 11), "resnet-cifar": (10,)}.get(
        name, (1000,) if net.input_shape == (224, 224, 3) or name == "alexnet" else (10,))
    assert net.output_shape == expected
    again = build(net.spec, weights=False)
    assert (again.spec, again.shapes, again.num_params) == (net.spec, net.shapes, net.num_params)


def test_vgg16_138357544_parameters_instantly():
    net = build("vgg16", weights=False)
    assert all(not layer.params for layer in net.layers)  # shapes and counts, no arrays
    assert net.num_params == 138_357_544
    fc1 = next(i for i, layer in enumerate(net.layers) if layer.kind == "FC")
    assert net.shapes[fc1 - 1] == (7, 7, 512)
    assert net.layers[fc1].count_params() == 25088 * 4096 + 4096
    assert sum(layer.kind == "CONV" for layer in net.layers) == 13


def test_alexnet_first_layer():
    net = build("alexnet", weights=False)
    assert net.shapes[0] == (55, 55, 96)
    assert net.layers[0].count_params() == 34_944
    fc1 = next(i for i, layer in enumerate(net.layers) if layer.kind == "FC")
    assert net.shapes[fc1 - 1] == (6, 6, 256)


def test_seed004_shapes():
    net = build("seed004", weights=False)
    shapes = {layer.name: shape for layer, shape in zip(net.layers, net.shapes, strict=True)}
    assert net.input_shape == (32, 32, 1)
    assert shapes["conv1"] == (28, 28, 3)
    assert shapes["pool1"] == (14, 14, 3)
    assert shapes["conv2"] == (10, 10, 6)
    assert shapes["pool2"] == (5, 5, 6)       # flattened: 150 values
    assert shapes["fc1"] == (100,)
    assert shapes["fc2"] == (10,)
    assert net["fc1"].count_params() == 150 * 100 + 100


@pytest.mark.parametrize(
    ("name", "params"),
    [("lenet5", 61_706), ("seed004", 16_644), ("fashion", 421_642), ("digits", 38_282),
     # 32*(9 + 1) + 2*32 + 128*(9*32 + 1) + 2*128 + 256*(6272 + 1) + 10*(256 + 1)
     ("fashion-bn", 1_646_090),
     # torchvision's counts (resnet18, resnet34, resnet50, mobilenet_v2, googlenet without its
     # auxiliary classifiers); ResNet-20 with projection shortcuts (the paper's option B)
     ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032),
     ("mobilenet_v2", 3_504_872), ("googlenet", 6_624_904), ("resnet-cifar", 272_474)],
)
def test_parameter_counts(name, params):
    assert build(name, weights=False).num_params == params


def test_lenet5_shapes():
    net = build("lenet5", weights=False)
    convs_pools = [s for layer, s in zip(net.layers, net.shapes, strict=True)
                   if layer.kind in ("CONV", "AVGPOOL")]
    assert convs_pools == [(28, 28, 6), (14, 14, 6), (10, 10, 16), (5, 5, 16)]


def test_fcn_is_fully_convolutional_on_any_size():
    net = build("fcn", weights=False)
    assert not any(layer.kind == "FC" for layer in net.layers)
    assert net.shapes[-2] == (7, 7, 10)
    assert build("fcn", input_shape=(36, 44, 1), weights=False).output_shape == (10,)


def test_small_nets_run():
    rng = np.random.default_rng(0)
    for name, shape in (("digits", (8, 8, 1)), ("seed004", (32, 32, 1))):
        net = build(name, seed=0)
        out = net.forward(rng.standard_normal((2, *shape)).astype(np.float32))
        assert out.shape == (2, 10)
        assert np.isfinite(out).all()


def test_resnet50_macs_are_the_published_4_1_gmacs():
    net = build("resnet50", weights=False)
    macs = sum(layer.macs() for layer in net.layers)
    assert macs == 4_089_184_256                     # 4.1 GMACs, as published
    assert net["gap1"].input_shape == (7, 7, 2048)
    proj = [ly.to_spec() for ly in net.layers if ly.inserted == "projection"]
    assert proj[0] == "CONV(256,F=1,bias=false)" and len(proj) == 8   # 4 stages: CONV + BN


def test_mobilenet_v2_and_googlenet_shapes():
    net = build("mobilenet_v2", weights=False)
    assert net["gap1"].input_shape == (7, 7, 1280)
    assert sum(ly.kind == "DWCONV" for ly in net.layers) == 17
    assert sum(ly.kind == "ADD" for ly in net.layers) == 10
    net = build("googlenet", weights=False)
    assert [ly.output_shape[-1] for ly in net.layers if ly.kind == "CAT"] == \
        [256, 480, 512, 512, 512, 528, 832, 832, 1024]
    assert net["gap1"].input_shape == (7, 7, 1024)
