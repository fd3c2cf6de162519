"""Optimisers and schedules against torch.optim as the oracle; resume and validation checks."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convnet.errors import CheckpointError, ConfigError
from convnet.optim import (
    SGD,
    Adam,
    AdamW,
    ConstantLR,
    CosineLR,
    MultiStepLR,
    OneCycleLR,
    StepLR,
    make_optimizer,
    make_schedule,
)

SHAPES = {"conv1.W": (4, 3, 3, 2), "conv1.b": (4,), "bn1.gamma": (4,), "fc1.W": (36, 5)}


class FakeNet:
    """The Sequential.parameters() protocol over dicts: (qualified_name, param, grad)."""

    def __init__(self, params: dict[str, np.ndarray]) -> None:
        self.params = params
        self.grads = {k: np.zeros_like(v) for k, v in params.items()}

    def parameters(self):
        for k, p in self.params.items():
            yield k, p, self.grads[k]


def make_net(seed: int = 0, dtype=np.float64) -> FakeNet:
    rng = np.random.default_rng(seed)
    return FakeNet({k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()})


def grad_sequence(n_steps: int, seed: int = 1, dtype=np.float64) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()} for _ in range(n_steps)
    ]


def run_ours(opt, net: FakeNet, grads, lrs=None) -> None:
    for i, g in enumerate(grads):
        for k in g:
            net.grads[k][...] = g[k]  # the layer fills its grad array in place
        if lrs is not None:
            opt.lr = lrs[i]
        opt.step(net)


def run_torch(make_opt, net0: FakeNet, grads, lrs=None) -> dict[str, np.ndarray]:
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in net0.params.items()}
    opt = make_opt(list(tparams.values()))
    for i, g in enumerate(grads):
        for k, p in tparams.items():
            p.grad = torch.tensor(g[k])
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[i]
        opt.step()
    return {k: p.detach().numpy() for k, p in tparams.items()}


CASES = [
    (lambda: SGD(lr=0.05), lambda ps: torch.optim.SGD(ps, lr=0.05)),
    (
        lambda: SGD(lr=0.05, momentum=0.9),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
    ),
    (
        lambda: SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
    ),
    (
        lambda: SGD(lr=0.03, momentum=0.5, weight_decay=5e-2),
        lambda ps: torch.optim.SGD(ps, lr=0.03, momentum=0.5, weight_decay=5e-2),
    ),
    (lambda: Adam(lr=1e-2), lambda ps: torch.optim.Adam(ps, lr=1e-2)),
    (
        lambda: Adam(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
        lambda ps: torch.optim.Adam(ps, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    ),
    (lambda: AdamW(lr=1e-2), lambda ps: torch.optim.AdamW(ps, lr=1e-2)),
    (
        lambda: AdamW(lr=5e-3, betas=(0.5, 0.9), weight_decay=0.3),
        lambda ps: torch.optim.AdamW(ps, lr=5e-3, betas=(0.5, 0.9), weight_decay=0.3),
    ),
]
CASE_IDS = [
    "sgd",
    "sgd-mom",
    "sgd-nesterov-wd",
    "sgd-mom-wd",
    "adam",
    "adam-wd",
    "adamw",
    "adamw-wd",
]


@pytest.mark.parametrize(("ours", "theirs"), CASES, ids=CASE_IDS)
def test_matches_torch_float64(ours, theirs):
    grads = grad_sequence(20)
    net = make_net()
    expected = run_torch(theirs, make_net(), grads)
    opt = ours()
    run_ours(opt, net, grads)
    for k in SHAPES:
        np.testing.assert_allclose(net.params[k], expected[k], rtol=1e-6, atol=1e-6, err_msg=k)
        # the update actually moved the parameter (the comparison could otherwise pass vacuously)
        assert not np.allclose(net.params[k], make_net().params[k])


@pytest.mark.parametrize(("ours", "theirs"), CASES, ids=CASE_IDS)
def test_matches_torch_with_changing_lr(ours, theirs):
    """The lr a schedule sets each step is the one used (decoupled decay uses it too)."""
    grads = grad_sequence(12, seed=5)
    sched = OneCycleLR(0.05, 12)
    lrs = [sched(i) for i in range(12)]
    expected = run_torch(theirs, make_net(3), grads, lrs)
    net = make_net(3)
    run_ours(ours(), net, grads, lrs)
    for k in SHAPES:
        np.testing.assert_allclose(net.params[k], expected[k], rtol=1e-6, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("ours", [c[0] for c in CASES], ids=CASE_IDS)
def test_float32_state_and_params_stay_float32(ours):
    grads64 = grad_sequence(10)
    grads32 = [{k: v.astype(np.float32) for k, v in g.items()} for g in grads64]
    net32, net64 = make_net(dtype=np.float32), make_net(dtype=np.float64)
    net64.params = {k: v.astype(np.float64) for k, v in net32.params.items()}
    opt32, opt64 = ours(), ours()
    run_ours(opt32, net32, grads32)
    run_ours(opt64, net64, [{k: v.astype(np.float64) for k, v in g.items()} for g in grads32])
    for k in SHAPES:
        assert net32.params[k].dtype == np.float32
        np.testing.assert_allclose(net32.params[k], net64.params[k], rtol=1e-4, atol=1e-5)
    for slots in opt32.state.values():
        for slot, arr in slots.items():
            if slot != "step":
                assert arr.dtype == np.float32


def test_params_updated_in_place_and_grads_untouched():
    net = make_net()
    ids = {k: id(v) for k, v in net.params.items()}
    g = grad_sequence(1)[0]
    for k in net.grads:
        net.grads[k][...] = g[k]
    SGD(lr=0.1, momentum=0.9, weight_decay=0.1).step(net)
    Adam(lr=0.1, weight_decay=0.1).step(net)
    assert {k: id(v) for k, v in net.params.items()} == ids
    for k in SHAPES:
        np.testing.assert_array_equal(net.grads[k], g[k])


def test_none_grad_is_skipped():
    net = make_net()
    before = {k: v.copy() for k, v in net.params.items()}
    net.grads["fc1.W"] = None
    run_ours(Adam(lr=0.1), net, [{k: np.ones(s) for k, s in SHAPES.items() if k != "fc1.W"}])
    np.testing.assert_array_equal(net.params["fc1.W"], before["fc1.W"])
    assert not np.array_equal(net.params["conv1.W"], before["conv1.W"])


# ----------------------------------------------------------------------------------------------
# state_dict: exact resume


def save_load_npz(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **d)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("ours", [c[0] for c in CASES], ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_resume_is_bit_identical(ours, dtype):
    grads = grad_sequence(14, dtype=dtype)
    sched = CosineLR(0.05, 14, warmup_steps=3)
    lrs = [sched(i) for i in range(14)]

    straight = make_net(dtype=dtype)
    run_ours(ours(), straight, grads, lrs)

    first = make_net(dtype=dtype)
    opt = ours()
    run_ours(opt, first, grads[:6], lrs[:6])
    saved_opt = save_load_npz(opt.state_dict())
    saved_params = {k: v.copy() for k, v in first.params.items()}
    del opt, first

    resumed = FakeNet(saved_params)
    opt2 = ours()
    opt2.load_state_dict(saved_opt)
    assert opt2.step_count == 6
    run_ours(opt2, resumed, grads[6:], lrs[6:])
    for k in SHAPES:
        np.testing.assert_array_equal(resumed.params[k], straight.params[k], err_msg=k)


def test_state_dict_keys_and_copies():
    net = make_net()
    opt = Adam()
    run_ours(opt, net, grad_sequence(2))
    d = opt.state_dict()
    assert d["step"].shape == () and int(d["step"]) == 2
    assert str(d["optimizer"]) == "adam"
    assert int(d["conv1.W.step"]) == 2
    assert d["conv1.W.exp_avg"].shape == SHAPES["conv1.W"]
    assert set(d) == {"optimizer", "step"} | {
        f"{k}.{s}" for k in SHAPES for s in ("exp_avg", "exp_avg_sq", "step")
    }
    d["conv1.W.exp_avg"][...] = 123.0  # a copy: the optimiser's state is unchanged
    assert not np.any(opt.state["conv1.W"]["exp_avg"] == 123.0)
    sgd = SGD(momentum=0.9)
    run_ours(sgd, make_net(), grad_sequence(1))
    assert "fc1.W.velocity" in sgd.state_dict()
    assert set(SGD().state_dict()) == {"optimizer", "step"}


def test_load_state_dict_rejects_mismatches():
    net = make_net()
    adam = Adam()
    run_ours(adam, net, grad_sequence(1))
    with pytest.raises(CheckpointError, match="saved by 'adam', not 'sgd'"):
        SGD(momentum=0.9).load_state_dict(adam.state_dict())
    bad = adam.state_dict()
    bad["conv1.W.velocity"] = np.zeros(3)
    with pytest.raises(
        CheckpointError, match="unexpected optimiser state entry 'conv1.W.velocity'"
    ):
        Adam().load_state_dict(bad)
    bad = adam.state_dict()
    del bad["conv1.W.exp_avg_sq"]
    with pytest.raises(CheckpointError, match="lacks 'conv1.W.exp_avg_sq'"):
        Adam().load_state_dict(bad)
    # shapes are checked against the network on the next step
    bad = adam.state_dict()
    bad["fc1.W.exp_avg"] = np.zeros((5, 36))
    fresh = Adam()
    fresh.load_state_dict(bad)
    with pytest.raises(CheckpointError, match=r"fc1.W.exp_avg has shape \(5, 36\)"):
        fresh.step(make_net())
    # a network parameter with no saved state would silently restart its moments
    other = FakeNet({**make_net().params, "fc2.W": np.zeros((2, 2))})
    fresh = Adam()
    fresh.load_state_dict(adam.state_dict())
    with pytest.raises(CheckpointError, match="no entry for fc2.W"):
        fresh.step(other)


def test_grad_shape_mismatch_raises():
    net = make_net()
    net.grads["fc1.b"] = np.zeros(3)
    net.params["fc1.b"] = np.zeros(5)
    with pytest.raises(ConfigError, match=r"gradient of fc1.b has shape \(3,\)"):
        SGD().step(net)


# ----------------------------------------------------------------------------------------------
# hyperparameters


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: SGD(lr=0), "lr must be finite and > 0"),
        (lambda: SGD(lr=-0.1), "received lr=-0.1"),
        (lambda: SGD(lr=float("nan")), "lr must be finite"),
        (lambda: SGD(lr=float("inf")), "lr must be finite"),
        (lambda: SGD(lr="fast"), "lr must be a number"),
        (lambda: SGD(momentum=1.0), "0 <= momentum < 1"),
        (lambda: SGD(momentum=-0.1), "0 <= momentum < 1"),
        (lambda: SGD(nesterov=True), "nesterov=True requires momentum > 0"),
        (lambda: SGD(weight_decay=-1e-4), "weight_decay must be >= 0"),
        (lambda: Adam(betas=(0.9, 1.0)), r"betas\[1\] must satisfy 0 <= beta < 1"),
        (lambda: Adam(betas=(-0.1, 0.9)), r"betas\[0\]"),
        (lambda: Adam(betas=0.9), "betas must be a pair"),
        (lambda: Adam(eps=0.0), "eps must be > 0"),
        (lambda: AdamW(weight_decay=-0.01), "weight_decay must be >= 0"),
        (lambda: AdamW(lr=0.0), "AdamW: lr"),
    ],
)
def test_bad_hyperparameters_raise(build, match):
    with pytest.raises(ConfigError, match=match):
        build()


def test_lr_setter_validates_but_allows_zero():
    opt = SGD()
    opt.lr = 0.0  # a schedule may end at 0
    assert opt.lr == 0.0
    with pytest.raises(ConfigError, match="lr must be finite and >= 0"):
        opt.lr = -1.0
    with pytest.raises(ConfigError):
        opt.lr = float("nan")


def test_make_optimizer_and_repr():
    opt = make_optimizer("SGD", lr=0.1, momentum=0.9, nesterov=True, weight_decay=None)
    assert isinstance(opt, SGD) and opt.nesterov and opt.weight_decay == 0.0
    assert repr(opt) == "SGD(lr=0.1, momentum=0.9, nesterov=True)"
    # the learning rate always; the other settings where they differ from the defaults
    assert repr(SGD()) == f"SGD(lr={SGD().lr!r})"
    assert repr(make_optimizer("adam")) == "Adam(lr=0.001)"
    assert repr(Adam(betas=(0.5, 0.999))) == "Adam(lr=0.001, betas=(0.5, 0.999))"
    assert repr(AdamW(weight_decay=0.0)) == "AdamW(lr=0.001, weight_decay=0.0)"
    assert repr(AdamW(lr=3e-3, eps=1e-6)) == "AdamW(lr=0.003, eps=1e-06)"
    assert isinstance(make_optimizer("adamw", lr=1e-3), AdamW)
    with pytest.raises(ConfigError, match="valid names: adam, adamw, sgd"):
        make_optimizer("rmsprop")
    with pytest.raises(ConfigError, match="'adam' does not take momentum"):
        make_optimizer("adam", momentum=0.9)


# ----------------------------------------------------------------------------------------------
# schedules against torch.optim.lr_scheduler


def torch_lrs(make_sched, base_lr: float, n: int) -> list[float]:
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = make_sched(opt)
    out = []
    for _ in range(n):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def assert_lrs_close(ours: list[float], theirs: list[float]) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("step_size", "gamma"), [(1, 0.9), (7, 0.1), (10, 0.5)])
def test_step_lr_matches_torch(step_size, gamma):
    n = 40
    theirs = torch_lrs(
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=step_size, gamma=gamma), 0.1, n
    )
    ours = StepLR(0.1, step_size, gamma)
    assert_lrs_close([ours(i) for i in range(n)], theirs)


def test_multistep_lr_matches_torch():
    n = 50
    theirs = torch_lrs(
        lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[10, 25, 26], gamma=0.3),
        0.2,
        n,
    )
    ours = MultiStepLR(0.2, [10, 25, 26], gamma=0.3)
    assert_lrs_close([ours(i) for i in range(n)], theirs)


@pytest.mark.parametrize(("total", "min_lr"), [(1, 0.0), (10, 0.0), (97, 1e-3), (300, 0.0)])
def test_cosine_matches_torch(total, min_lr):
    theirs = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=min_lr),
        0.1,
        total + 1,
    )
    ours = CosineLR(0.1, total, min_lr=min_lr)
    assert_lrs_close([ours(i) for i in range(total + 1)], theirs)
    assert ours(total) == min_lr and ours(total + 50) == min_lr


def test_cosine_warmup():
    s = CosineLR(1.0, 20, min_lr=0.1, warmup_steps=4)
    assert [s(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert s(4) == 1.0
    assert math.isclose(s(12), 0.1 + 0.9 * 0.5)  # halfway through the 16 annealing steps
    assert math.isclose(s(20), 0.1)
    vals = [s(i) for i in range(4, 21)]
    assert all(b <= a for a, b in zip(vals, vals[1:], strict=False))


@pytest.mark.parametrize(
    ("total", "pct", "div", "final_div"),
    [(100, 0.3, 25.0, 1e4), (37, 0.25, 10.0, 100.0), (10, 0.5, 25.0, 1e4), (3, 0.3, 25.0, 1e4)],
)
def test_onecycle_matches_torch(total, pct, div, final_div):
    theirs = torch_lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o,
            max_lr=0.5,
            total_steps=total,
            pct_start=pct,
            div_factor=div,
            final_div_factor=final_div,
            cycle_momentum=False,
        ),
        0.5,
        total,
    )
    ours = OneCycleLR(0.5, total, pct_start=pct, div_factor=div, final_div_factor=final_div)
    assert_lrs_close([ours(i) for i in range(total)], theirs)
    assert ours(total + 10) == ours.final_lr


@settings(max_examples=25, deadline=None)
@given(
    total=st.integers(2, 200),
    pct=st.floats(0.05, 0.95),
    min_frac=st.floats(0.0, 1.0),
)
def test_schedules_match_torch_property(total, pct, min_frac):
    lr = 0.3
    ours = OneCycleLR(lr, total, pct_start=pct)
    if pct * total != 1.0:  # torch divides by zero on a zero-length first phase
        theirs = torch_lrs(
            lambda o: torch.optim.lr_scheduler.OneCycleLR(
                o, max_lr=lr, total_steps=total, pct_start=pct, cycle_momentum=False
            ),
            lr,
            total,
        )
        assert_lrs_close([ours(i) for i in range(total)], theirs)
    else:
        assert ours(0) == lr  # our zero-length first phase gives its end value
    cos = CosineLR(lr, total, min_lr=lr * min_frac)
    theirs = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=lr * min_frac),
        lr,
        total,
    )
    np.testing.assert_allclose([cos(i) for i in range(total)], theirs, rtol=1e-9, atol=1e-12)


def test_make_schedule():
    s = make_schedule("step", 0.1, total_steps=100, steps_per_epoch=10)
    assert isinstance(s, MultiStepLR) and s.milestones == (50, 75)
    assert math.isclose(s(49), 0.1) and math.isclose(s(50), 0.01) and math.isclose(s(75), 1e-3)
    s = make_schedule("Step", 0.1, 100, 10, milestones=[3, 8], gamma=0.5)
    assert s.milestones == (30, 80) and math.isclose(s(30), 0.05)
    assert make_schedule("step", 0.1, 1, 1)(0) == 0.1  # no milestone fits in a 1-step run
    assert isinstance(make_schedule("constant", 0.1, 10, 5), ConstantLR)
    c = make_schedule("cosine", 0.1, 100, 10, warmup_epochs=2, min_lr=1e-3)
    assert isinstance(c, CosineLR) and c.warmup_steps == 20 and c.min_lr == 1e-3
    o = make_schedule("onecycle", 0.1, 100, 10)
    assert isinstance(o, OneCycleLR) and o.max_lr == 0.1
    with pytest.raises(ConfigError, match="valid names: constant, step, cosine, onecycle"):
        make_schedule("linear", 0.1, 10, 1)
    with pytest.raises(ConfigError, match="total_steps must be >= 1"):
        make_schedule("cosine", 0.1, 0, 1)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ConstantLR(0.0), "lr must be finite and > 0"),
        (lambda: StepLR(0.1, 0), "step_size must be >= 1"),
        (lambda: StepLR(0.1, 2.5), "step_size must be an integer"),
        (lambda: StepLR(0.1, 5, gamma=0.0), "gamma must be finite and > 0"),
        (lambda: MultiStepLR(0.1, [5, 5]), "strictly increasing"),
        (lambda: CosineLR(0.1, 10, min_lr=0.2), "0 <= min_lr <= lr"),
        (lambda: CosineLR(0.1, 10, warmup_steps=10), "warmup_steps=10 must be < total_steps=10"),
        (lambda: OneCycleLR(0.1, 10, pct_start=1.5), "0 <= pct_start <= 1"),
        (lambda: OneCycleLR(0.1, 0), "total_steps must be >= 1"),
        (lambda: CosineLR(0.1, 10)(-1), "step must be >= 0"),
    ],
)
def test_bad_schedule_arguments_raise(build, match):
    with pytest.raises(ConfigError, match=match):
        build()


def test_schedule_reprs():
    assert repr(StepLR(0.1, 5)) == "StepLR(lr=0.1, step_size=5)"
    assert (
        repr(CosineLR(0.1, 50, warmup_steps=5))
        == "CosineLR(lr=0.1, total_steps=50, warmup_steps=5)"
    )
    assert repr(OneCycleLR(0.1, 50)) == "OneCycleLR(max_lr=0.1, total_steps=50)"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ours", [c[0] for c in CASES[:4]], ids=CASE_IDS[:4])
def test_sgd_compiled_step_is_bitwise_the_numpy_passes(monkeypatch, ours, dtype):
    """The one-pass compiled SGD update against the NumPy passes it replaces: the same
    parameters and velocities to the last bit, first step (velocity = gradient) included; a
    velocity that is not contiguous (as a user could load one) takes the NumPy path."""
    from convnet.ops import _jit

    if not _jit.HAVE_NUMBA:
        pytest.skip("Numba missing: only the NumPy path exists")
    grads = grad_sequence(4, dtype=dtype)
    calls = []
    real = SGD._compiled_update
    monkeypatch.setattr(SGD, "_compiled_update",
                        lambda self, *a: (calls.append(ran := real(self, *a)), ran)[1])
    compiled_net, compiled = make_net(dtype=dtype), ours()
    run_ours(compiled, compiled_net, grads)
    monkeypatch.setattr(SGD, "_compiled_update", lambda self, *a: False)
    numpy_net, numpy_opt = make_net(dtype=dtype), ours()
    run_ours(numpy_opt, numpy_net, grads)
    assert calls == [True] * (4 * len(SHAPES))               # the compiled pass really ran
    for k in SHAPES:
        np.testing.assert_array_equal(compiled_net.params[k], numpy_net.params[k])
        assert compiled_net.params[k].dtype == dtype
    for k, v in numpy_opt.state_dict().items():
        np.testing.assert_array_equal(compiled.state_dict()[k], v)
    if compiled.momentum:
        monkeypatch.setattr(SGD, "_compiled_update", real)
        v = compiled.state["fc1.W"]["velocity"]
        compiled.state["fc1.W"]["velocity"] = np.asfortranarray(v)   # not C-contiguous
        numpy_opt.state["fc1.W"]["velocity"] = v.copy()
        compiled_net.grads["fc1.W"][...] = grads[0]["fc1.W"]
        numpy_net.grads["fc1.W"][...] = grads[0]["fc1.W"]
        numpy_opt._update("fc1.W", numpy_net.params["fc1.W"], numpy_net.grads["fc1.W"])
        compiled._update("fc1.W", compiled_net.params["fc1.W"], compiled_net.grads["fc1.W"])
        np.testing.assert_array_equal(compiled_net.params["fc1.W"], numpy_net.params["fc1.W"])
