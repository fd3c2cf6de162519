"""Hostile images: regular files only, the pixel cap checked from the header before decoding,
values scaled by the format's range (never guessed from the content), non-finite pixels refused,
and every failure one DataError naming the file."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import convnet as cn
from convnet.cli.main import main
from convnet.data import load_image, load_image_folder
from convnet.errors import DataError
from convnet.safety import caps

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header claims ``width x height`` (a decompression
    bomb's header: decoding it would allocate width*height bytes)."""
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))


@pytest.mark.parametrize("w, h", [(100_000, 100_000), (12_000, 12_000), (2**31 - 1, 2)])
def test_a_header_over_the_pixel_cap_is_refused_before_decoding(tmp_path, w, h):
    p = tmp_path / "bomb.png"
    p.write_bytes(png_claiming(w, h))
    with pytest.raises(DataError) as e:
        load_image(p, (8, 8, 1))
    msg = str(e.value)
    assert str(p) in msg and f"{w * h:,} pixels" in msg and "--max-image-pixels" in msg
    assert "DecompressionBomb" not in msg


def test_the_pixel_cap_is_one_rule_and_a_flag_raises_it(tmp_path):
    p = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(p)
    with caps(image_pixels=100_000), pytest.raises(DataError, match="120,000 pixels"):
        load_image(p, (8, 8, 1))
    with caps(image_pixels=120_000):
        assert load_image(p, (8, 8, 1))[0].shape == (8, 8, 1)


def test_an_image_folder_holding_a_bomb_is_one_data_error(tmp_path, capsys):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / cls / f"{i}.png")
    bomb = tmp_path / "b" / "huge.png"
    bomb.write_bytes(png_claiming(100_000, 100_000))
    with pytest.raises(DataError, match="huge.png.*10,000,000,000 pixels"):
        load_image_folder(tmp_path)
    code = main(["train", "--data", str(tmp_path), "--arch", "INPUT(5x5x1) -> FC(2)",
                 "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("convnet train: error: ") and "huge.png" in err
    assert "Traceback" not in err and err.count("\n") == 1


@SETTINGS
@given(value=st.integers(0, 65535), fmt=st.sampled_from(["PNG", "TIFF"]))
def test_16_bit_images_scale_by_65535_whatever_their_content(tmp_path, value, fmt):
    # a uniform 255 is dark (255/65535), not white; a uniform 256 is not 256/65535*255
    p = tmp_path / f"deep.{fmt.lower()}"
    Image.fromarray(np.full((4, 4), value, np.uint16)).save(p, fmt)
    img, _ = load_image(p, (4, 4, 1))
    np.testing.assert_allclose(img, value / 65535, rtol=1e-6, atol=1e-7)


@SETTINGS
@given(maxval=st.integers(256, 65535), data=st.data())
def test_pgm_scales_by_its_maxval(tmp_path, maxval, data):
    v = data.draw(st.integers(0, maxval))
    p = tmp_path / "x.pgm"
    p.write_bytes(f"P5\n2 2\n{maxval}\n".encode() + np.full(4, v, ">u2").tobytes())
    img, _ = load_image(p, (2, 2, 1))
    # Pillow rescales a PGM's maxval to 65535 (rounding), then we scale by 65535
    np.testing.assert_allclose(img, v / maxval, atol=1 / 65535 + 1e-6)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_float_tiff_with_one_non_finite_pixel_is_refused(tmp_path, bad):
    a = np.full((5, 6), 0.25, np.float32)
    a[3, 4] = bad
    p = tmp_path / "f.tiff"
    Image.fromarray(a, mode="F").save(p)
    with pytest.raises(DataError) as e:
        load_image(p, (5, 6, 1))
    msg = str(e.value)
    assert str(p) in msg and "1 pixel(s)" in msg and "row 3, column 4" in msg


@SETTINGS
@given(values=st.lists(st.floats(-2, 3, width=32), min_size=6, max_size=6))
def test_float_images_are_read_by_their_range_not_rescaled(tmp_path, values):
    a = np.array(values, np.float32).reshape(2, 3)
    p = tmp_path / "f.tiff"
    Image.fromarray(a, mode="F").save(p)
    img, notes = load_image(p, (2, 3, 1))
    np.testing.assert_allclose(img[..., 0], np.clip(a, 0, 1), atol=1e-7)
    outside = int(((a < 0) | (a > 1)).sum())
    assert (f"clipped {outside:,} pixel(s)" in " ".join(notes)) == bool(outside)


def test_special_files_are_refused(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="x.png: is a FIFO"):
        load_image(fifo, (8, 8, 1))
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    with pytest.raises(DataError, match="zero.png: is a character device"):
        load_image(tmp_path / "zero.png", (8, 8, 1))
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(DataError, match="dir.png: is a directory"):
        load_image(tmp_path / "dir.png", (8, 8, 1))


def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    mode = "P" if fmt == "GIF" else "RGB"
    Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).convert(mode).save(buf, fmt)
    return buf.getvalue()


_FORMATS = {fmt: _encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}


@SETTINGS
@given(fmt=st.sampled_from(sorted(_FORMATS)), data=st.data())
def test_mutated_images_decode_or_are_one_data_error(tmp_path, fmt, data):
    raw = bytearray(_FORMATS[fmt])
    for _ in range(data.draw(st.integers(1, 5))):
        i = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[i] = data.draw(st.integers(0, 255))
        else:
            del raw[i:i + data.draw(st.integers(1, 16))]
    p = tmp_path / f"m.{fmt.lower()}"
    p.write_bytes(bytes(raw))
    try:
        img, _ = load_image(p, (6, 5, 3))
    except DataError as e:
        assert str(p) in str(e)
    else:
        assert img.shape == (6, 5, 3) and np.isfinite(img).all()


def test_scan_of_a_bomb_is_exit_2_and_one_line(tmp_path, capsys):
    net = cn.build("INPUT(8x8x1) -> CONV(4,F=3) -> RELU -> FC(3)", seed=0)
    model = cn.save(net, tmp_path / "m.npz")
    bomb = tmp_path / "photo.png"
    bomb.write_bytes(png_claiming(12_000, 12_000))
    code = main(["scan", str(model), str(bomb), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "144,000,000 pixels" in err
    code = main(["scan", str(model), str(bomb), "-o", str(tmp_path / "out"),
                 "--max-image-pixels", "1e12"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot read image" in err  # past the cap: its data is what fails
