"""Argument types shared by the verbs: a bad value is one argparse error line, exit status 2."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number >= 1 (epochs, batch sizes, counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, received {text!r}") \
            from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, received {text!r}")
    return value


def count(text: str) -> int:
    """A whole number >= 0 (how many samples, a seed)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, received {text!r}")
    return value


def port_number(text: str) -> int:
    """A TCP port: 1 to 65535, or 0 for any free port (checked before anything runs)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a TCP port from 1 to 65535 (or 0 for any free port), received {text!r}")
    return value


def size(text: str) -> int:
    """A cap: a whole number >= 1, with an optional k/M/G or Ki/Mi/Gi suffix (``4GiB``)."""
    from convnet.errors import ConfigError
    from convnet.safety import parse_size

    try:
        return parse_size(text, "value")
    except ConfigError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number >= 1 such as 100000000, 4GiB or 500M, received {text!r}"
        ) from None
