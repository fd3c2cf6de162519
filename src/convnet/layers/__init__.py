"""Layers: thin stateful objects (params, grads, shapes) over the functional core in ``ops``."""

from convnet.layers.activation import LeakyReLU, ReLU, Sigmoid, Tanh
from convnet.layers.base import Layer
from convnet.layers.conv import Conv, ConvTranspose
from convnet.layers.dense import FC, Flatten
from convnet.layers.pool import AvgPool, GlobalAvgPool, MaxPool
from convnet.layers.regularization import BatchNorm, Dropout

__all__ = [
    "FC", "AvgPool", "BatchNorm", "Conv", "ConvTranspose", "Dropout", "Flatten",
    "GlobalAvgPool", "Layer", "LeakyReLU", "MaxPool", "ReLU", "Sigmoid", "Tanh",
]
