"""The `convnet visualize` page used as a person would: opened from disk in headless Chromium,
a unit clicked, its receptive field and dot product checked against the engine.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; skipped with
the reason otherwise. Selenium is pointed at /usr/bin/chromedriver so that selenium-manager never
downloads anything, and the browser starts with background networking disabled.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import convnet as cn
from convnet.viz.page import Sample, decode_float32, layer_activations, visualize

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.browser

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("needs Debian's chromium and chromium-driver (/usr/bin/chromium, "
                "/usr/bin/chromedriver)", allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from viznets import EXOTIC, SPEC, images, make_net  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="convnet-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    except Exception as exc:  # a broken install: say so rather than fail every test
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"chromium did not start: {exc}")
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_page(driver, path: Path) -> None:
    driver.get(path.resolve().as_uri())
    assert driver.execute_script("return document.body.dataset.ready") == "1"
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def train_tiny_run(run_dir: Path) -> Path:
    """2 epochs of `fit` on the 8x8 digits with the run directory `convnet train` writes; a
    random-weights checkpoint if the training module is missing."""
    from convnet.data import Normalizer, load_digits

    train, test = load_digits()
    net = cn.build(SPEC, seed=0)
    norm = Normalizer.fit(train.x)
    info = {"shape": [8, 8, 1], "range": [0, 1], "dataset": "digits"}
    try:
        from convnet.train import MetricsLog, ModelCheckpoint, fit
    except ImportError:
        from convnet.train.checkpoint import save

        save(net, run_dir / "best.npz", classes=train.classes, normalizer=norm, input_info=info)
        return run_dir
    fit(net, train, test, epochs=2, batch_size=32, lr=0.01, normalizer=norm, input_info=info,
        callbacks=[MetricsLog(run_dir), ModelCheckpoint(run_dir)])
    return run_dir


@pytest.fixture(scope="module")
def digits_page(tmp_path_factory):
    """The page as a user makes it: `convnet visualize RUN --data digits`; and the engine's
    activations for the images it embeds, computed here layer by layer."""
    from convnet.cli.main import main
    from convnet.train.checkpoint import load

    d = tmp_path_factory.mktemp("page")
    run = train_tiny_run(d)
    out = d / "report.html"
    assert main(["visualize", str(run), "--data", "digits", "--samples", "4", "-o", str(out)]) == 0
    data = json.loads(re.search(r'id="cn-data">(.*?)</script>', out.read_text(), re.S).group(1))
    net = load(run)
    raw = np.stack([decode_float32(s["raw"], net.input_shape) for s in data["samples"]])
    x = (raw - net.normalizer["mean"]) / net.normalizer["std"]
    acts = []
    for layer in net.layers:
        x = layer.forward(x)
        acts.append(x)
    return out, net, acts, data


def unit_value(driver) -> tuple[float, float, dict]:
    value = float(driver.find_element(By.ID, "cn-unit-value").text)
    engine = float(driver.find_element(By.ID, "cn-unit-engine").text)
    title = driver.find_element(By.ID, "cn-unit-title")
    where = {k: int(title.get_attribute(f"data-{k}")) for k in ("layer", "r", "c", "d")}
    return value, engine, where


def click_unit(driver, layer: int, depth: int, r: int, c: int, shape) -> None:
    cv = driver.find_element(By.CSS_SELECTOR, f'canvas[data-layer="{layer}"][data-depth="{depth}"]')
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", cv)
    w, h = cv.size["width"], cv.size["height"]
    # Selenium 4 offsets are from the element's centre
    dx = (c + 0.5) * w / shape[1] - w / 2
    dy = (r + 0.5) * h / shape[0] - h / 2
    ActionChains(driver).move_to_element_with_offset(cv, int(dx), int(dy)).click().perform()


def test_click_a_conv_unit_shows_rf_and_dot_product_equal_to_engine(browser, digits_page):
    path, net, acts, _ = digits_page
    open_page(browser, path)
    click_unit(browser, 0, 1, 2, 5, (8, 8))
    value, engine, where = unit_value(browser)
    assert where == {"layer": 0, "r": 2, "c": 5, "d": 1}
    truth = float(acts[0][0, 2, 5, 1])
    assert abs(value - truth) <= 1e-5 and abs(engine - truth) <= 1e-5
    dot = browser.find_element(By.ID, "cn-dot")
    assert dot.is_displayed() and "dot product" in dot.text and "bias" in dot.text
    # the receptive field of conv1 (F=3, P=1) at (2, 5): rows 1..3, cols 4..6, from arith
    rf = cn.arith.layer_rows(net)[0].rf.box((2, 5))
    text = browser.find_element(By.ID, "cn-rf-text").text
    assert f"rows {int(rf[0][0])}..{int(rf[0][1])}, cols {int(rf[1][0])}..{int(rf[1][1])}" in text
    painted = browser.execute_script("""
        const cv = document.getElementById('cn-rf-canvas');
        const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n;""")
    assert painted > 50, "the receptive-field outline is drawn on the input"
    assert len(browser.find_elements(By.CSS_SELECTOR, ".mark")) >= 1

    # the run's log and the test set made it to the page
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.curve polyline")) >= 2
    assert browser.find_element(By.CSS_SELECTOR, "table.confusion").is_displayed()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#cn-wrong .thumb")) >= 1

    browser.execute_script("window.scrollTo(0, 0)")
    png = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    colours = png.getcolors(maxcolors=1 << 22)
    assert colours is not None and len(colours) > 200, "the screenshot is not blank"


def test_choosing_another_image_changes_the_activations(browser, digits_page):
    path, net, acts, data = digits_page
    open_page(browser, path)
    pixels = ("const cv = document.querySelector('canvas[data-layer=\"0\"][data-depth=\"0\"]');"
              "return Array.from(cv.getContext('2d').getImageData(0, 0, 8, 8).data);")
    before = browser.execute_script(pixels)
    click_unit(browser, 3, 2, 1, 0, (2, 2))  # conv2
    v0, _, _ = unit_value(browser)
    assert abs(v0 - float(acts[3][0, 1, 0, 2])) <= 1e-5
    thumb = browser.find_element(By.CSS_SELECTOR, '#cn-gallery .thumb[data-sample="2"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", thumb)
    thumb.click()
    after = browser.execute_script(pixels)
    assert after != before
    v2, engine2, where = unit_value(browser)  # the same unit, recomputed for the new image
    assert where == {"layer": 3, "r": 1, "c": 0, "d": 2}
    truth = float(acts[3][2, 1, 0, 2])
    assert abs(v2 - truth) <= 1e-5 and abs(engine2 - truth) <= 1e-5 and v2 != v0
    assert data["samples"][2]["title"] in browser.find_element(By.ID, "cn-sample-title").text


def test_every_kind_of_unit_recomputes_to_the_engine(browser, tmp_path):
    """CONV (stride, non-square, dilation, no bias), DECONV, pools, GAP, BN, every activation,
    FLATTEN, DROPOUT and FC: the page's float64 number equals the engine's to 1e-5."""
    for k, spec in enumerate([EXOTIC, "INPUT(7x7x2) -> CONV(3,F=3,P=1,bias=false) -> BN -> "
                              "LRELU(0.1) -> POOL(F=3,S=2,P=1) -> GAP -> FC(4)"]):
        net = make_net(spec, seed=k)
        raw = images(2, net.input_shape, seed=k)
        path = visualize(net, tmp_path / f"p{k}.html",
                         images=[Sample(raw[i], f"i{i}") for i in range(2)])
        acts = layer_activations(net, raw)
        open_page(browser, path)
        browser.execute_script("convnetViz.select(1)")
        rng = np.random.default_rng(k)
        units = []
        for li, a in enumerate(acts):
            shape = a.shape[1:]
            for _ in range(6):
                if len(shape) == 3:
                    units.append([li, *(int(rng.integers(s)) for s in shape)])
                else:
                    units.append([li, 0, 0, int(rng.integers(shape[0]))])
        got = browser.execute_script(
            "return arguments[0].map(u => convnetViz.explain(u[0], u[1], u[2], u[3]));", units)
        for (li, r, c, d), res in zip(units, got, strict=True):
            a = acts[li][1]
            truth = float(a[r, c, d] if a.ndim == 3 else a[d])
            kind = net.layers[li].kind
            assert abs(res["value"] - truth) <= 1e-5, (kind, li, r, c, d, res, truth)
            assert abs(res["engine"] - truth) <= 1e-6, (kind, li, r, c, d)
