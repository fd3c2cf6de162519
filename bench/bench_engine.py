"""The engine issue's check: the reference network against PyTorch CPU, side by side in one run.

    python bench/bench_engine.py [--threads 2] [--out FILE]

Network: INPUT(28x28x1) -> CONV(32,F=3,P=1) -> RELU -> POOL -> CONV(64,F=3,P=1) -> RELU -> POOL
-> FC(128) -> RELU -> FC(10). Training step (forward + backward + SGD with momentum) and
inference at batch 128 and 32, images/s for each system and the ratio.

This is ``bench/run.py`` restricted to that network (same timing: interleaved repetitions,
medians, the same weights in a PyTorch twin); extra arguments are passed on to it.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402 - bench/run.py, found through the line above

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "--only", "networks", "--networks", "reference", "--batches",
                "128,32", "--out", str(HERE / "results" / "ENGINE.md"), *sys.argv[1:]]
    run.main()
