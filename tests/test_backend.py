"""The backend seam (convnet/backend.py) and ops/dense.py: the machinery is reached through one
door, and the FC op computes what its formula says."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from convnet import backend
from convnet.ops import _jit, dense

SRC = Path(__file__).resolve().parents[1] / "src" / "convnet"
PRIVATE = {"_arena", "_jit", "_threads", "_blocks"}
#: Files outside ops/ that still import a private speed module, until they are switched to the
#: backend (net/sequential.py: ``_threads.single_blas`` -> ``backend.single_blas``).
NOT_YET: set[str] = set()


def _private_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {part for name in names if name.startswith("convnet.ops")
                  for part in name.split(".") if part in PRIVATE}
    return found


def test_only_ops_and_the_backend_import_the_speed_modules():
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("ops/") or rel == "backend.py":
            continue
        if _private_imports(path):
            offenders[rel] = sorted(_private_imports(path))
    assert set(offenders) == NOT_YET, (
        f"outside ops/ the speed machinery is reached through convnet.backend; these import "
        f"it directly: {offenders} (a file switched to the backend leaves NOT_YET)")


def test_backend_names_do_what_they_say():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 200)), rng.standard_normal((200, 150))
    np.testing.assert_allclose(backend.matmul(a, b), a @ b, rtol=1e-12)
    c = rng.standard_normal((300, 150))
    np.testing.assert_allclose(backend.matmul_tn(a, c), a.T @ c, rtol=1e-10, atol=1e-10)
    assert backend.xp is np and backend.NAME == "numpy"
    assert backend.has_jit() == _jit.HAVE_NUMBA
    z = backend.zeros((512, 1024), np.float32)                    # 2 MiB: from the arena
    assert z.shape == (512, 1024) and z.dtype == np.float32 and not z.any()
    assert backend.empty((3,), np.float64).shape == (3,)
    assert backend.map_blocks(lambda s, e: (s, e), backend.row_blocks(7, 2), 2) == \
        [(0, 3), (3, 7)]
    assert backend.concurrently(lambda: 1, lambda: 2) == [1, 2]
    with backend.single_blas():
        assert backend.workers() >= 1
    del z
    backend.release()
    assert backend.kept_bytes()[1] == 0


def test_sgd_step_is_the_formula():
    rng = np.random.default_rng(1)
    p, g, v = (rng.standard_normal(50) for _ in range(3))
    want_v = v * 0.9 + (p * 0.01 + g)
    want_p = p - want_v * 0.1
    backend.sgd_step(p, g, v, 0.1, 0.9, 0.01, False, False)
    np.testing.assert_allclose(v, want_v, rtol=1e-15)
    np.testing.assert_allclose(p, want_p, rtol=1e-15)


def test_fc_op_forward_and_gradients():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 2, 3, 4))
    W, b = rng.standard_normal((24, 7)), rng.standard_normal(7)
    out, cache = dense.fc_forward(x, W, b)
    np.testing.assert_allclose(out, x.reshape(5, -1) @ W + b, rtol=1e-12)
    dout = rng.standard_normal((5, 7))
    dx, dW, db = dense.fc_backward(dout, cache)
    np.testing.assert_allclose(dx, (dout @ W.T).reshape(x.shape), rtol=1e-12)
    np.testing.assert_allclose(dW, x.reshape(5, -1).T @ dout, rtol=1e-12)
    np.testing.assert_allclose(db, dout.sum(axis=0), rtol=1e-12)
    none, dW1, db1 = dense.fc_backward(dout, dense.fc_forward(x, W, None)[1], need_dx=False)
    assert none is None and db1 is None
    np.testing.assert_allclose(dW1, dW, rtol=1e-12)
