"""The Keras-style methods (``net.fit`` / ``net.evaluate`` / ``net.predict``, issue 19) and
misuse of the Python API (issue 20): each mistake is one documented ConvnetError subclass."""

from __future__ import annotations

import numpy as np
import pytest

import convnet as cn
from convnet.data import load_dataset
from convnet.errors import ConfigError, InputError, ShapeError
from convnet.train.loop import History

SPEC = "INPUT(8x8x1) -> CONV(4,F=3,P=1) -> BN -> RELU -> POOL -> DROPOUT(0.5) -> FC(10)"


@pytest.fixture(scope="module")
def digits():
    train, test = load_dataset("digits")
    return (train.x[:300], train.y[:300]), (test.x[:100], test.y[:100])


def test_fit_evaluate_predict_methods(digits):
    (xt, yt), (xv, yv) = digits
    net = cn.build(SPEC, seed=0)
    history = net.fit((xt, yt), (xv, yv), epochs=3, batch_size=32, lr=0.01, seed=0)
    assert isinstance(history, History) and len(history) == 3
    assert history["epoch"] == [1, 2, 3] and history.stop_reason is None
    assert history["loss"][-1] < history["loss"][0]
    assert all(0 <= a <= 1 for a in history["val_accuracy"])
    # the method is the function: the same run from the same seed gives the same weights
    twin = cn.build(SPEC, seed=0)
    h2 = cn.fit(twin, (xt, yt), (xv, yv), epochs=3, batch_size=32, lr=0.01, seed=0)
    assert h2["loss"] == history["loss"]
    for (name, w, _), (_, w2, _) in zip(net.parameters(), twin.parameters(), strict=True):
        np.testing.assert_array_equal(w, w2, err_msg=name)

    res = net.evaluate((xv, yv), batch_size=16)
    assert res["count"] == 100
    ref = cn.evaluate(net, (xv, yv))
    assert res["loss"] == pytest.approx(ref["loss"], rel=1e-6)
    assert res["accuracy"] == ref["accuracy"]
    np.testing.assert_array_equal(res["confusion"], ref["confusion"])
    # consistent with the last epoch's validation numbers and with predict's scores
    assert res["accuracy"] == pytest.approx(history["val_accuracy"][-1])
    assert res["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-5)

    scores = net.predict(xv, batch_size=7)  # chunks that do not divide 100
    assert scores.shape == (100, 10) and scores.dtype == net.dtype
    np.testing.assert_allclose(scores, net.forward(xv, train=False), rtol=1e-5, atol=1e-6)
    assert res["accuracy"] == pytest.approx(np.mean(scores.argmax(1) == yv))
    np.testing.assert_array_equal(res["predictions"], scores.argmax(1))
    loss, _ = cn.softmax_cross_entropy(scores.astype(np.float64), yv)
    assert res["loss"] == pytest.approx(loss, rel=1e-5)
    # evaluation mode: dropout off, BN running statistics, so predict is deterministic
    np.testing.assert_array_equal(net.predict(xv), net.predict(xv))
    assert net.predict(xv[:0]).shape == (0, 10)


@pytest.mark.parametrize("call, error, text", [
    (lambda: cn.softmax(np.array(1.0)), InputError, "softmax: scores need at least one axis"),
    (lambda: cn.softmax(np.array(["a", "b"])), InputError, "softmax: scores must be numbers"),
    (lambda: cn.build("INPUT(4x4x1) -> FC(2)", seed=0).predict(np.zeros((1, 4, 4, 1)),
                                                             batch_size=0),
     ConfigError, "batch_size=0 must be a whole number >= 1"),
    (lambda: cn.build("INPUT(4x4x1) -> FC(2)", seed=0).predict(np.zeros((1, 4, 4, 1)),
                                                             batch_size=True),
     ConfigError, "batch_size=True must be a whole number >= 1"),
    (lambda: cn.Sequential([cn.FC(10**12)], input_shape=(8, 8, 1)), ShapeError,
     "fc1 (FC K=1000000000000): its output 1000000000000 has a size of 1,000,000,000,000, "
     "over the limit"),
    (lambda: cn.build("INPUT(4x4x1) -> FC(2)", seed=0).predict(np.zeros((1, 5, 5, 1))),
     ShapeError, "network input"),
])
def test_api_misuse_is_one_convnet_error(call, error, text):
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, ValueError) and text in str(info.value)
