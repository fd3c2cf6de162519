"""The keyed generator (convnet.keyed_random): SplitMix64 exactly, uniform, and independent across
the key's fields (sample, epoch, layer, seed), so dropout and augmentation can be functions of
the sample instead of draws from a sequential generator (issue 16)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import convnet as cn
from convnet.keyed_random import (
    CHUNK,
    GAMMA,
    STREAM_DROPOUT,
    SampleKeys,
    epoch_order,
    mix64,
    stream_key,
)


def test_mix64_is_splitmix64():
    """Vigna's splitmix64.c seeded 1234567: next() = mix64(state += GAMMA)."""
    states = np.array([(1234567 + k * GAMMA) % 2**64 for k in range(1, 6)], np.uint64)
    assert mix64(states).tolist() == [6457827717110365317, 3203168211198807973,
                                      9817491932198370423, 4593380528125082431,
                                      16408922859458223821]


def test_bits_are_the_streams_outputs():
    keys = SampleKeys(7, 2, np.array([0, 5, 123456789]))
    seeds = keys.seeds(STREAM_DROPOUT, 1)
    bits = keys.bits((STREAM_DROPOUT, 1), 4)
    for i, s in enumerate(seeds.tolist()):
        ref = mix64(np.array([(s + (k + 1) * GAMMA) % 2**64 for k in range(4)], np.uint64))
        np.testing.assert_array_equal(bits[i], ref)
    # output k alone is the same as output k among others
    np.testing.assert_array_equal(keys.bits((STREAM_DROPOUT, 1), 2, first=2), bits[:, 2:])


def _chi2_uniform(u: np.ndarray, bins: int) -> float:
    counts = np.bincount(np.minimum((u * bins).astype(np.int64), bins - 1), minlength=bins)
    expected = u.size / bins
    return float(((counts - expected) ** 2 / expected).sum())


def test_uniform_and_bit_balance():
    keys = SampleKeys(0, 0, np.arange(1024))
    u = keys.uniform((3,), 1024, np.float64).reshape(-1)       # 2^20 numbers
    assert 0.0 <= u.min() and u.max() < 1.0
    # chi-square with 255 degrees of freedom: mean 255, sd 22.6; these bounds are 6 sd
    assert 120 < _chi2_uniform(u, 256) < 390
    bits = keys.bits((3,), 1024).reshape(-1)
    n = bits.size
    ones = np.array([np.count_nonzero((bits >> np.uint64(b)) & np.uint64(1)) for b in range(64)])
    assert np.all(np.abs(ones - n / 2) < 6 * np.sqrt(n) / 2), ones  # every bit fair to 6 sd


@pytest.mark.parametrize("a, b", [
    (SampleKeys(0, 0, np.arange(0, 4096, 2)), SampleKeys(0, 0, np.arange(1, 4096, 2))),  # samples
    (SampleKeys(0, 0, np.arange(2048)), SampleKeys(0, 1, np.arange(2048))),              # epochs
    (SampleKeys(0, 0, np.arange(2048)), SampleKeys(1, 0, np.arange(2048))),              # seeds
], ids=["neighbouring samples", "next epoch", "next seed"])
def test_independent_across_keys(a, b):
    """Streams whose keys differ by one in one field: no correlation, and their pairs fill the
    unit square evenly (a 16 x 16 chi-square)."""
    ua = a.uniform((STREAM_DROPOUT, 9), 256, np.float64).reshape(-1)
    ub = b.uniform((STREAM_DROPOUT, 9), 256, np.float64).reshape(-1)
    n = ua.size
    assert abs(np.corrcoef(ua, ub)[0, 1]) < 6 / np.sqrt(n)
    cells = (np.minimum((ua * 16).astype(int), 15) * 16 + np.minimum((ub * 16).astype(int), 15))
    counts = np.bincount(cells, minlength=256)
    chi2 = ((counts - n / 256) ** 2 / (n / 256)).sum()
    assert 120 < chi2 < 390
    # and no correlation between a unit and the next one in the same stream
    assert abs(np.corrcoef(ua[:-1], ua[1:])[0, 1]) < 6 / np.sqrt(n)


def test_streams_and_layers_differ():
    keys = SampleKeys(3, 1, np.arange(512))
    a = keys.uniform((STREAM_DROPOUT, 1), 512, np.float64).reshape(-1)
    b = keys.uniform((STREAM_DROPOUT, 2), 512, np.float64).reshape(-1)
    assert abs(np.corrcoef(a, b)[0, 1]) < 6 / np.sqrt(a.size)


def test_stream_key_fields():
    assert stream_key(1, 2) != stream_key(2, 1)
    assert stream_key(-1) == stream_key(2**64 - 1)        # modulo 2^64
    assert len({stream_key(s, 0) for s in range(1000)}) == 1000


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_keep_mask_rate_and_split_invariance(p):
    keys = SampleKeys(11, 4, np.arange(100, 164))
    mask = keys.keep_mask((STREAM_DROPOUT, 5), (6, 6, 8), p)
    assert mask.shape == (64, 6, 6, 8) and mask.dtype == bool
    n = mask.size
    assert abs(mask.mean() - (1 - p)) < 6 * np.sqrt(p * (1 - p) / n) + 1e-12
    # any split of the batch gives each sample the same mask
    parts = [SampleKeys(11, 4, idx).keep_mask((STREAM_DROPOUT, 5), (6, 6, 8), p)
             for idx in (np.arange(100, 123), np.arange(123, 164))]
    np.testing.assert_array_equal(np.concatenate(parts), mask)
    # the mask is the documented comparison of the stream's top 24 bits
    top = keys.bits((STREAM_DROPOUT, 5), 6 * 6 * 8) >> np.uint64(40)
    np.testing.assert_array_equal(mask.reshape(64, -1), top >= round(p * 2**24))


def test_keep_mask_of_wide_samples_is_chunked_the_same():
    """A sample with more units than one chunk is cut along its units: same bits."""
    units = CHUNK + 1000
    keys = SampleKeys(2, 0, np.array([3, 9]))
    mask = keys.keep_mask((STREAM_DROPOUT, 1), (units,), 0.5)
    top = keys.bits((STREAM_DROPOUT, 1), units) >> np.uint64(40)
    np.testing.assert_array_equal(mask, top >= 2**23)


def test_epoch_order_is_a_function_of_key_and_epoch():
    a = epoch_order(5, 0, 1000)
    np.testing.assert_array_equal(np.sort(a), np.arange(1000))
    np.testing.assert_array_equal(a, epoch_order(5, 0, 1000))
    assert not np.array_equal(a, epoch_order(5, 1, 1000))
    assert not np.array_equal(a, epoch_order(6, 0, 1000))


def test_dropout_layer_uses_the_keys_it_is_given():
    layer = cn.Dropout(0.5)
    layer.build((4, 4, 3), rng=np.random.default_rng(0))
    x = np.ones((6, 4, 4, 3), np.float32)
    keys = SampleKeys(1, 0, np.arange(10, 16))
    layer.use_keys(keys)
    out = layer.forward(x, train=True)
    keep = keys.keep_mask((STREAM_DROPOUT, zlib.crc32(b"dropout")), (4, 4, 3), 0.5)
    np.testing.assert_array_equal(out, keep * np.float32(2.0))
    # the keys are used once; a mismatched count is refused with the numbers in the message
    layer.use_keys(SampleKeys(1, 0, np.arange(3)))
    with pytest.raises(cn.ConfigError, match="keys for 3 samples .* batch of 6"):
        layer.forward(x, train=True)
