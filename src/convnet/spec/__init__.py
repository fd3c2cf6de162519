"""The architecture language of the seeds (``build``) and the zoo of named architectures.

>>> from convnet.spec import build
>>> build("INPUT(32x32x3) -> [[CONV(16,F=3,P=1) -> RELU]*2 -> POOL]*3 -> FC(10)",
...       weights=False).output_shape
(10,)
"""

from convnet.spec.parser import LayerSpec, build, layer_names, parse, resolve
from convnet.spec.zoo import ZOO, describe, zoo_names

__all__ = ["ZOO", "LayerSpec", "build", "describe", "layer_names", "parse", "resolve", "zoo_names"]
