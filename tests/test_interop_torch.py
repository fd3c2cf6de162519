"""PyTorch in (issue 14): ``torch.onnx.export`` with both exporters, and ``cn.from_torch``.

The numbers are PyTorch's own on the same input (relative error <= 1e-5 in float32): a
Sequential CNN with BN kept, a ResNet-18 built here from ``torch.nn`` modules (basic blocks with
a downsample; torchvision is not installed), and every module kind ``from_torch`` reads.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import convnet as cn
from convnet.interop import read_onnx
from convnet.interop.mapping import NotRepresentable
from convnet.interop.onnx_export import compare_with_onnxruntime, export_onnx
from convnet.interop.onnx_import import agreement

TOL = 1e-5


def randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.2
            m.running_mean = torch.randn(n, generator=g) * 0.3
            m.running_var = torch.rand(n, generator=g) + 0.5
    return model.eval()


def torch_scores(model, x_nhwc):
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))).numpy()


def rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def export(model, x_nhwc, path, dynamo, **kw):
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    kw.update({"input_names": ["x"], "output_names": ["y"], "dynamo": dynamo})
    if dynamo:
        kw["dynamic_shapes"] = ({0: torch.export.Dim("N")},)
    else:
        kw["dynamic_axes"] = {"x": {0: "N"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), **kw)
    return path


class Basic(nn.Module):
    """torchvision's BasicBlock: two 3x3 CONVs with BN, the downsample a 1x1 CONV and BN."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet-18 layout ((2, 2, 2, 2) basic blocks), or fewer stages."""

    def __init__(self, widths=(64, 128, 256, 512), blocks=2, classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for i, w in enumerate(widths):
            for b in range(blocks):
                layers.append(Basic(cin, w, 2 if (b == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def test_resnet18_exported_by_torch_imports_and_agrees(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(ResNet())
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    # without constant folding the exporter keeps the BNs (with it, it folds them into the CONVs)
    path = export(model, x, tmp_path / "resnet18.onnx", dynamo=False, do_constant_folding=False)
    m = read_onnx(path)
    net = m.net
    assert net.num_params == 11_689_512                   # torchvision's resnet18
    assert net.spec.count("BN") == 20
    assert net.spec.count("RES[") == 8 and net.spec.endswith("GAP -> FC(1000)")
    assert net.spec.count("| CONV(") == 3                 # three downsample shortcuts
    assert rel(net.forward(x), torch_scores(model, x)) <= TOL
    # what every verb then shows: the zoo's resnet18 has the same parameter count
    assert net.num_params == cn.build("resnet18", weights=False).num_params


@pytest.mark.slow
def test_resnet18_by_the_dynamo_exporter(tmp_path):
    torch.manual_seed(1)
    model = randomize_bn(ResNet())
    x = np.random.default_rng(1).random((2, 64, 64, 3), dtype=np.float32)
    m = read_onnx(export(model, x, tmp_path / "r.onnx", dynamo=True))
    assert m.net.spec.count("RES[") == 8
    assert rel(m.net.forward(x), torch_scores(model, x)) <= TOL


class SmallCNN(nn.Sequential):
    """BN after a RELU (no exporter can fold it), depthwise and grouped CONVs, ReLU6, a padded
    average pool, BN1d after a Linear, LeakyReLU, Tanh, Dropout."""

    def __init__(self):
        super().__init__(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8),
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.ReLU6(),
            nn.Conv2d(8, 12, 1, groups=4), nn.MaxPool2d(2),
            nn.AvgPool2d(3, stride=1, padding=1), nn.LeakyReLU(0.1),
            nn.ConvTranspose2d(12, 6, 2, stride=2), nn.Sigmoid(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(6 * 4 * 4, 20), nn.BatchNorm1d(20), nn.Tanh(),
            nn.Dropout(0.3), nn.Linear(20, 5))


@pytest.mark.parametrize("dynamo", [False, True])
def test_sequential_cnn_by_both_exporters(dynamo, tmp_path):
    torch.manual_seed(2)
    model = randomize_bn(SmallCNN())
    x = np.random.default_rng(2).random((3, 8, 8, 3), dtype=np.float32)
    path = export(model, x, tmp_path / "cnn.onnx", dynamo)
    m = read_onnx(path)
    assert rel(m.net.forward(x), torch_scores(model, x)) <= TOL
    assert agreement(m, path) <= TOL
    assert "DWCONV(F=3,P=1,bias=false)" in m.net.spec and "G=4" in m.net.spec
    # and back out: convnet's export of what it imported runs the same in onnxruntime
    again = export_onnx(m.net, tmp_path / "again.onnx")
    assert compare_with_onnxruntime(m.net, again) <= TOL


def test_a_small_residual_net_by_the_dynamo_exporter(tmp_path):
    torch.manual_seed(3)
    model = randomize_bn(ResNet(widths=(64, 96), blocks=1, classes=7))
    x = np.random.default_rng(3).random((2, 32, 32, 3), dtype=np.float32)
    m = read_onnx(export(model, x, tmp_path / "r.onnx", dynamo=True))
    assert m.net.spec.count("RES[") == 2
    assert rel(m.net.forward(x), torch_scores(model, x)) <= TOL


# ------------------------------------------------------------------------------ from_torch
def test_from_torch_every_module_kind_equals_torch(tmp_path):
    torch.manual_seed(4)
    model = randomize_bn(nn.Sequential(
        nn.ZeroPad2d(1), nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Hardtanh(0.0, 6.0),
        nn.Sequential(nn.Conv2d(8, 16, 3, padding="same", groups=8), nn.ReLU(),
                      nn.MaxPool2d(3, 2, padding=1)),
        nn.ConvTranspose2d(16, 4, 3, stride=2, padding=1, output_padding=1), nn.LeakyReLU(),
        nn.AvgPool2d(2), nn.Dropout2d(), nn.Identity(), nn.Conv2d(4, 6, 3, dilation=2,
                                                                  padding=2),
        nn.Sigmoid(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.BatchNorm1d(24),
        nn.Linear(24, 10), nn.Tanh(),
        nn.BatchNorm1d(10), nn.Linear(10, 4), nn.Softmax(dim=1)))
    net = cn.from_torch(model, (12, 12, 3))
    assert net.spec == (
        "INPUT(12x12x3) -> CONV(8,F=3,P=1) -> BN -> RELU6 -> DWCONV(F=3,P=1,multiplier=2) -> RELU -> "
        "POOL(F=3,S=2,P=1,floor=true) -> DECONV(4,F=3,S=2,P=1,output_padding=1) -> LRELU -> "
        "AVGPOOL(F=2) -> CONV(6,F=3,P=2,dilation=2) -> SIGMOID -> AVGPOOL(F=3) -> FLATTEN -> BN "
        "-> FC(10) -> "
        "TANH -> BN -> FC(4)")
    x = np.random.default_rng(4).random((3, 12, 12, 3), dtype=np.float32)
    want = torch_scores(model[:-1], x)
    assert rel(net.forward(x), want) <= TOL
    path = export_onnx(net, tmp_path / "t.onnx")             # and on to onnxruntime
    assert compare_with_onnxruntime(net, path) <= TOL


class Relu2(nn.ReLU):
    def forward(self, x):
        return super().forward(x) * 2


def test_from_torch_refusals():
    conv = nn.Conv2d(3, 4, 3)
    cases = [
        (nn.Sequential(conv, nn.GELU()), (8, 8, 3),
         "nn.Sequential: module '1' (nn.GELU): nn.GELU has no convnet layer. Modules convnet "
         "converts: Conv2d, ConvTranspose2d, Linear, BatchNorm1d/2d, ReLU, ReLU6, Hardtanh(0, "
         "6), LeakyReLU, Tanh, Sigmoid, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, "
         "AdaptiveMaxPool2d(1), Flatten, ZeroPad2d, Dropout, Identity, a final Softmax"),
        (nn.Sequential(conv), (3, 8, 8),
         "from_torch: input_shape=(3, 8, 8) looks like PyTorch's (C, H, W); convnet takes (H, "
         "W, D): (8, 8, 3)"),
        (Basic(3, 3, 1), (8, 8, 3),
         "from_torch: Basic is not an nn.Sequential: its wiring is in its forward(), which "
         "convnet does not read. Export it with torch.onnx.export(model, x, 'model.onnx') and "
         "import the file (convnet.import_onnx)"),
        (nn.Sequential(nn.MaxPool2d(3, 2, ceil_mode=True)), (8, 8, 3),
         "nn.Sequential: module '0' (nn.MaxPool2d): ceil_mode=1 adds a last window that sticks "
         "out of the padded rows: ceil((8 + 2*0 - 3)/2) + 1 = 4, where convnet's windows give "
         "3. That window reads padding on one side only, which convnet's symmetric P cannot "
         "express; re-export with ceil_mode=False (or pad the input so that the stride fits)"),
        (nn.Sequential(nn.Conv2d(3, 4, 3, padding_mode="reflect", padding=1)), (8, 8, 3),
         "nn.Sequential: module '0' (nn.Conv2d): padding_mode='reflect': convnet pads with "
         "zeros only"),
        (nn.Sequential(nn.Conv2d(3, 4, 3), Relu2()), (8, 8, 3),
         "nn.Sequential: module '1' (Relu2): a subclass of nn.ReLU, whose forward may compute "
         "otherwise: convnet converts the torch.nn classes themselves (use nn.ReLU, or export "
         "with torch.onnx.export and import the file)"),
    ]
    for model, shape, text in cases:
        with pytest.raises(NotRepresentable) as e:
            cn.from_torch(model.eval(), shape)
        assert str(e.value) == text
    # ceil_mode that gives the floor's sizes is the same pool
    net = cn.from_torch(nn.Sequential(nn.MaxPool2d(2, 2, ceil_mode=True)), (8, 8, 3))
    assert net.spec == "INPUT(8x8x3) -> POOL"
