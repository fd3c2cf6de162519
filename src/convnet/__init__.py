"""convnet: convolutional neural networks from first principles on NumPy.

>>> import convnet as cn
>>> net = cn.build("INPUT(28x28x1) -> CONV(32,F=3,P=1) -> RELU -> POOL -> FC(10)", seed=0)
>>> net.output_shape
(10,)

Arrays are NHWC float32: ``(N, H, W, D)``. See ``docs/ARCHITECTURE.md`` for the layout.
"""

from __future__ import annotations

import importlib
from typing import Any

from convnet.errors import (
    CheckpointError,
    ConfigError,
    ConvnetError,
    DataError,
    InputError,
    ShapeError,
    SpecError,
)
from convnet.layers import (
    FC,
    Add,
    AvgPool,
    BatchNorm,
    Concat,
    Conv,
    ConvTranspose,
    DepthwiseConv,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    LeakyReLU,
    MaxPool,
    ReLU,
    ReLU6,
    Sigmoid,
    Tanh,
)
from convnet.net.blocks import Block, Cat, Res
from convnet.net.graph import Graph
from convnet.net.sequential import Sequential
from convnet.ops.loss import softmax, softmax_cross_entropy

__version__ = "0.1.0"

# Names that live in larger subpackages, imported on first use so `import convnet` stays quick.
_LAZY = {
    "SGD": "convnet.optim",
    "Adam": "convnet.optim",
    "AdamW": "convnet.optim",
    "StepLR": "convnet.optim",
    "CosineLR": "convnet.optim",
    "OneCycleLR": "convnet.optim",
    "ConstantLR": "convnet.optim",
    "build": "convnet.spec",
    "parse": "convnet.spec",
    "zoo": "convnet.spec",
    "zoo_names": "convnet.spec",
    "summary": "convnet.report",
    "explain": "convnet.report",
    "fit": "convnet.train",
    "evaluate": "convnet.train",
    "save": "convnet.train",
    "load": "convnet.train",
    "load_dataset": "convnet.data",
    "Dataset": "convnet.data",
    "to_fully_convolutional": "convnet.fcn",
    "arith": "convnet.arith",
    "export_onnx": "convnet.interop",
    "import_onnx": "convnet.interop",
    "from_torch": "convnet.interop",
}

# aliases for readers coming from other libraries
MaxPool2d = MaxPool
Conv2d = Conv
Deconv = ConvTranspose
Dense = FC


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'convnet' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if module.endswith(name) else getattr(mod, name)
    globals()[name] = value
    return value


__all__ = [
    "FC", "Add", "AvgPool", "BatchNorm", "Block", "Cat", "CheckpointError", "Concat",
    "ConfigError", "Conv", "ConvTranspose", "ConvnetError", "DataError", "DepthwiseConv",
    "Dropout", "Flatten", "GlobalAvgPool", "Graph", "InputError", "Layer", "LeakyReLU", "MaxPool",
    "ReLU", "ReLU6", "Res", "Sequential", "ShapeError", "Sigmoid", "SpecError", "Tanh",
    "softmax", "softmax_cross_entropy", *_LAZY,
]
