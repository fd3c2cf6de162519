"""Fully convolutional networks: FC -> CONV conversion, score maps, segmentation."""

from convnet.fcn.convert import to_fully_convolutional

__all__ = ["to_fully_convolutional"]
