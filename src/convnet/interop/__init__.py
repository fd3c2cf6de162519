"""Models in and out: ONNX export and import, PyTorch import.

- :func:`export_onnx` (``convnet export``): a convnet network as an ONNX file.
- :func:`import_onnx` (``convnet import``, and every verb that takes a MODEL): an ONNX file as a
  convnet network, from convnet, ``torch.onnx.export`` (either exporter) or tf2onnx.
- :func:`from_torch`: a PyTorch ``nn.Sequential`` as a convnet network, from its modules and
  state dict.

Both directions read one table (:mod:`convnet.interop.mapping`). ``onnx``, ``onnxruntime`` and
``torch`` are optional (``pip install convnet[onnx]``) and imported only when used: a missing one
is a one-line error naming the install command.
"""

from __future__ import annotations

import importlib
from typing import Any

from convnet.errors import ConfigError

#: what to install for each optional module
INSTALL = {
    "onnx": "pip install 'convnet[onnx]'",
    "onnxruntime": "pip install 'convnet[onnx]'",
    "torch": "pip install torch (https://pytorch.org/get-started/locally/)",
}


def require(module: str) -> Any:
    """Import an optional dependency, or raise :class:`~convnet.errors.ConfigError` saying how to
    install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"this needs the Python package {module!r}, which is not installed: "
                          f"{INSTALL.get(module, f'pip install {module}')}") from None


_LAZY = {
    "export_onnx": "convnet.interop.onnx_export",
    "import_onnx": "convnet.interop.onnx_import",
    "read_onnx": "convnet.interop.onnx_import",
    "onnx_checkpoint": "convnet.interop.onnx_import",
    "from_torch": "convnet.interop.torch_import",
    "NotRepresentable": "convnet.interop.mapping",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'convnet.interop' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["INSTALL", "require", *_LAZY]
