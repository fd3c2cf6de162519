"""Layers: thin stateful objects (params, grads, shapes) over the functional core in ``ops``.

Every concrete layer class registers itself by its spec name in :data:`LAYER_CLASSES`; the
architecture language, the reports and the page read the layers' own descriptions from there.
"""

from convnet.layers.activation import LeakyReLU, ReLU, ReLU6, Sigmoid, Tanh
from convnet.layers.base import LAYER_CLASSES, Layer, PlanTraits, SpecArg
from convnet.layers.conv import Conv, ConvTranspose, DepthwiseConv
from convnet.layers.dense import FC, Flatten
from convnet.layers.merge import Add, Concat
from convnet.layers.pool import AvgPool, GlobalAvgPool, MaxPool
from convnet.layers.regularization import BatchNorm, Dropout

__all__ = [
    "FC", "LAYER_CLASSES", "Add", "AvgPool", "BatchNorm", "Concat", "Conv", "ConvTranspose",
    "DepthwiseConv", "Dropout", "Flatten", "GlobalAvgPool", "Layer", "LeakyReLU", "MaxPool",
    "PlanTraits", "ReLU", "ReLU6", "Sigmoid", "SpecArg", "Tanh",
]
