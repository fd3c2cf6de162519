"""The ``convnet`` console command's entry point: catches Ctrl-C before ``convnet`` is imported.

Importing the package (NumPy, the layers, Numba's kernels) takes most of a second; an interrupt
in that window would otherwise print a ``KeyboardInterrupt`` traceback from the import machinery.
Here it exits with status 130 and nothing printed, as :func:`convnet.cli.main.main` does once it
runs.
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from convnet.cli.main import main as convnet_main
    except KeyboardInterrupt:
        return 130
    try:
        return convnet_main()
    except KeyboardInterrupt:  # pragma: no cover - main() catches it; belt and braces
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
