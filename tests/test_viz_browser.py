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

from viznets import EDGE, EXOTIC, GRAPH, SPEC, images, make_net  # noqa: E402


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


# ------------------------------------------------------------------- branching networks
@pytest.fixture(scope="module")
def graph_page(tmp_path_factory):
    """The page of a small graph (identity and projection shortcuts, CATs, a grouped CONV, a
    DWCONV whose RELU6 clips), and the engine's activations of every layer."""
    net = make_net(GRAPH, seed=1)
    net["dwconv1"].params["W"] *= 25        # so that some of RELU6's inputs pass 6
    raw = images(2, net.input_shape, seed=4)
    path = visualize(net, tmp_path_factory.mktemp("graph") / "graph.html",
                     images=[Sample(raw[i], f"g{i}") for i in range(2)])
    acts = layer_activations(net, raw)
    assert (acts[net.layers.index(net["relu6_1"])] == 6).any(), "RELU6 clips somewhere"
    return path, net, acts


def index_of(net, name: str) -> int:
    return next(i for i, ly in enumerate(net.layers) if ly.name == name)


def test_graph_page_draws_lanes_and_every_layer(browser, graph_page):
    path, net, _ = graph_page
    open_page(browser, path)
    heads = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "svg.arch text.lane-head")]
    assert "| shortcut: projection (inserted)" in heads and "| shortcut: identity" in heads
    assert "CAT[ branch 1 of 3" in heads and "RES[ main branch" in heads
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.arch rect.blk-res")) == 3
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.arch rect.blk-cat")) == 2
    for i in range(len(net.layers)):   # a volume for every layer, and its maps below
        assert browser.find_element(By.CSS_SELECTOR, f'svg.arch .arch-col[data-layer="{i}"]')
        assert browser.find_element(By.ID, f"layer-{i}")
    # a merge says what it reads, a branch's first layer too
    add2 = browser.find_element(By.ID, f"layer-{index_of(net, 'add2')}")
    reads = add2.find_element(By.CSS_SELECTOR, "p.reads")
    assert reads.get_attribute("data-inputs") == "bn2,bn3"
    assert "main branch" in reads.text and "projection (inserted)" in reads.text
    conv4 = browser.find_element(By.ID, f"layer-{index_of(net, 'conv4')}")
    assert "shortcut: projection (inserted)" in conv4.find_element(By.CSS_SELECTOR, ".place").text
    assert conv4.find_element(By.CSS_SELECTOR, "p.reads").get_attribute("data-inputs") == "add1"
    # clicking a volume in the drawing goes to its maps
    col = browser.find_element(By.CSS_SELECTOR, f'svg.arch .arch-col[data-layer="{index_of(net, "cat2")}"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", col)
    ActionChains(browser).move_to_element(col).click().perform()
    in_view = ("const r = document.getElementById(arguments[0]).getBoundingClientRect();"
               "return r.top >= -2 && r.top < window.innerHeight - 80;")
    target = f"layer-{index_of(net, 'cat2')}"
    for _ in range(30):   # a smooth scroll: wait for it to arrive
        if browser.execute_script(in_view, target):
            break
        browser.execute_script("return new Promise(r => setTimeout(r, 100))")
    assert browser.execute_script(in_view, target)


def test_clicking_an_add_unit_shows_both_summands_and_follows_either(browser, graph_page):
    path, net, acts = graph_page
    open_page(browser, path)
    li = index_of(net, "add2")
    r, c, d = 3, 1, 4
    click_unit(browser, li, d, r, c, net.layers[li].output_shape)
    value, engine, where = unit_value(browser)
    assert where == {"layer": li, "r": r, "c": c, "d": d}
    rows = browser.find_elements(By.CSS_SELECTOR, "#cn-summands tr.summand")
    srcs = net.inputs_of[li]
    assert [row.get_attribute("data-input") for row in rows] == [net.layers[k].name for k in srcs]
    shown = [float(row.find_element(By.CSS_SELECTOR, "td.v").text) for row in rows]
    truth = [float(acts[k][0, r, c, d]) for k in srcs]
    np.testing.assert_allclose(shown, truth, atol=1e-6)
    assert "projection (inserted)" in rows[1].text and "main branch" in rows[0].text
    total = float(browser.find_element(By.ID, "cn-sum").text)
    assert abs(total - sum(truth)) <= 1e-6 and abs(total - float(acts[li][0, r, c, d])) <= 1e-5
    assert abs(value - total) <= 1e-9 and abs(engine - float(acts[li][0, r, c, d])) <= 1e-6
    # follow the shortcut: the projection's BN, then its 1x1 CONV with stride 2, then add1 (the
    # block's input) at row 2r, col 2c
    buttons = browser.find_elements(By.CSS_SELECTOR, "#cn-follow .follow-btn")
    assert len(buttons) == 2
    buttons[1].click()
    _, _, where = unit_value(browser)
    assert where == {"layer": index_of(net, "bn3"), "r": r, "c": c, "d": d}
    browser.find_element(By.CSS_SELECTOR, "#cn-follow .follow-btn").click()
    v, e, where = unit_value(browser)
    assert where == {"layer": index_of(net, "conv4"), "r": r, "c": c, "d": d}
    assert abs(v - e) <= 1e-5
    browser.find_element(By.CSS_SELECTOR, "#cn-follow .follow-btn").click()
    _, _, where = unit_value(browser)
    assert where["layer"] == index_of(net, "add1") and (where["r"], where["c"]) == (2 * r, 2 * c)
    crumbs = browser.find_elements(By.CSS_SELECTOR, "#cn-trail .crumb")
    assert len(crumbs) == 4 and crumbs[0].text.startswith("add2[")
    crumbs[0].click()            # back to the ADD; now the main branch
    _, _, where = unit_value(browser)
    assert where["layer"] == li
    browser.find_elements(By.CSS_SELECTOR, "#cn-follow .follow-btn")[0].click()
    _, _, where = unit_value(browser)
    assert where == {"layer": index_of(net, "bn2"), "r": r, "c": c, "d": d}


def test_clicking_through_a_cat_and_grouped_convs(browser, graph_page):
    path, net, acts = graph_page
    open_page(browser, path)
    li = index_of(net, "cat1")   # depths 0..1 conv5, 2..7 relu6_1, 8..13 pool1
    for d, src, dd in [(1, "conv5", 1), (5, "relu6_1", 3), (8, "pool1", 0), (13, "pool1", 5)]:
        click_unit(browser, li, d, 2, 4, net.layers[li].output_shape)
        value, engine, where = unit_value(browser)
        assert where == {"layer": li, "r": 2, "c": 4, "d": d}
        p = browser.find_element(By.ID, "cn-cat-src")
        assert (p.get_attribute("data-input"), int(p.get_attribute("data-depth"))) == (src, dd)
        truth = float(acts[index_of(net, src)][0, 2, 4, dd])
        assert value == engine and abs(value - truth) <= 1e-6
    browser.find_element(By.CSS_SELECTOR, "#cn-follow .follow-btn").click()
    _, _, where = unit_value(browser)
    assert where == {"layer": index_of(net, "pool1"), "r": 2, "c": 4, "d": 5}

    li = index_of(net, "conv6")    # CONV(6,F=1,G=2) on 14 slices: filter 4 reads slices 7..13
    click_unit(browser, li, 4, 1, 3, net.layers[li].output_shape)
    value, engine, _ = unit_value(browser)
    g = browser.find_element(By.ID, "cn-group")
    assert (g.get_attribute("data-group"), g.get_attribute("data-first"),
            g.get_attribute("data-last")) == ("1", "7", "13")
    x = acts[index_of(net, "cat1")][0, 1, 3, 7:14].astype(np.float64)
    W, b = net.layers[li].params["W"], net.layers[li].params["b"]
    assert abs(value - (x @ W[4, 0, 0].astype(np.float64) + b[4])) <= 1e-5
    assert abs(value - float(acts[li][0, 1, 3, 4])) <= 1e-5 and abs(engine - value) <= 1e-5

    li = index_of(net, "dwconv1")  # one 3x3 filter per slice: filter 3 reads slice 3 only
    click_unit(browser, li, 3, 0, 2, net.layers[li].output_shape)
    value, _, _ = unit_value(browser)
    g = browser.find_element(By.ID, "cn-group")
    assert (g.get_attribute("data-first"), g.get_attribute("data-last")) == ("3", "3")
    assert "depthwise" in g.text
    assert abs(value - float(acts[li][0, 0, 2, 3])) <= 1e-4 * max(1, abs(value))


def check_every_unit(browser, net, acts, extra=()) -> list:
    """8 random units of every layer (and ``extra`` ones) explained in the page: its float64
    number equals the engine's, and the walk back only goes to the layers it reads."""
    browser.execute_script("convnetViz.select(1)")
    rng = np.random.default_rng(7)
    units = []
    for li, a in enumerate(acts):
        shape = a.shape[1:]
        for _ in range(8):
            if len(shape) == 3:
                units.append([li, *(int(rng.integers(s)) for s in shape)])
            else:
                units.append([li, 0, 0, int(rng.integers(shape[0]))])
    units += list(extra)
    got = browser.execute_script(
        "return arguments[0].map(u => [convnetViz.explain(u[0], u[1], u[2], u[3]), "
        "convnetViz.next(u[0], u[1], u[2], u[3])]);", units)
    for (li, r, c, d), (res, nxt) in zip(units, got, strict=True):
        a = acts[li][1]
        truth = float(a[r, c, d] if a.ndim == 3 else a[d])
        assert abs(res["value"] - truth) <= 1e-5 * max(1, abs(truth)), (net.layers[li].name, r, c, d)
        assert abs(res["engine"] - truth) <= 1e-6 * max(1, abs(truth))
        assert nxt and {u["li"] for u in nxt} <= set(net.inputs_of[li]), net.layers[li].name
    return list(zip(units, got, strict=True))


def test_every_unit_of_a_graph_recomputes_to_the_engine_and_walks_to_its_inputs(browser,
                                                                                 graph_page):
    """Each layer of the graph (merges, grouped and depthwise CONV, RELU6 clipping, the
    projection)."""
    path, net, acts = graph_page
    open_page(browser, path)
    relu6 = index_of(net, "relu6_1")
    clipped = [[relu6, *(int(v) for v in u)] for u in np.argwhere(acts[relu6][1] == 6)[:3]]
    assert clipped
    checked = check_every_unit(browser, net, acts, clipped)
    assert all(res["value"] == 6 for (li, *_), (res, _) in checked[-len(clipped):])


def test_every_unit_of_blocks_on_the_input_and_of_vector_merges(browser, tmp_path):
    net = make_net(EDGE, seed=3)
    raw = images(2, net.input_shape, seed=6)
    path = visualize(net, tmp_path / "edge.html", images=[Sample(raw[i], f"e{i}") for i in range(2)])
    open_page(browser, path)
    check_every_unit(browser, net, layer_activations(net, raw))
    # an ADD that reads the input: the walk's shortcut step is a pixel of the input
    browser.execute_script("convnetViz.click(1, 2, 3, 1)")
    buttons = browser.find_elements(By.CSS_SELECTOR, "#cn-follow .follow-btn")
    assert [b.get_attribute("data-layer") for b in buttons] == ["0", "-1"]
    buttons[1].click()
    value, engine, where = unit_value(browser)
    assert where == {"layer": -1, "r": 2, "c": 3, "d": 1} and value == engine == pytest.approx(
        float(raw[1, 2, 3, 1]), abs=1e-6)   # the image check_every_unit chose
    assert not browser.find_elements(By.CSS_SELECTOR, "#cn-follow")


def test_resnet_cifar_page_loads_and_a_walk_reaches_the_input(browser, tmp_path):
    net = cn.build("resnet-cifar", seed=0)
    raw = images(1, net.input_shape, seed=5)
    path = visualize(net, tmp_path / "resnet.html", images=[Sample(raw[0], "r")])
    open_page(browser, path)
    n = len(net.layers)
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.arch .arch-col")) == n + 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#cn-layers .layer")) == n
    last_add = max(i for i, ly in enumerate(net.layers) if ly.kind == "ADD")
    browser.execute_script(f"convnetViz.click({last_add}, 3, 5, 7)")
    # always the first way back (the main branch of an ADD), by the buttons, in the page
    walk = browser.execute_script("""
        const out = [];
        for (let k = 0; k < arguments[0]; k++) {
          const t = document.getElementById('cn-unit-title');
          out.push({li: +t.dataset.layer, value: +document.getElementById('cn-unit-value').textContent,
                    engine: +document.getElementById('cn-unit-engine').textContent,
                    crumbs: document.querySelectorAll('#cn-trail .crumb').length,
                    text: document.getElementById('cn-unit').textContent});
          const b = document.querySelector('#cn-follow .follow-btn');
          if (!b) break;
          b.click();
        }
        return out;""", n + 2)
    for step in walk:
        assert abs(step["value"] - step["engine"]) <= 1e-4 * max(1, abs(step["engine"])), step["li"]
    assert walk[-1]["li"] == -1 and "walk back ends here" in walk[-1]["text"]
    assert 20 <= len(walk) <= n + 1 and walk[-1]["crumbs"] == len(walk)
    assert [s["li"] for s in walk] == sorted((s["li"] for s in walk), reverse=True)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    browser.execute_script("window.scrollTo(0, 0)")
    png = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    assert len(png.getcolors(maxcolors=1 << 22) or []) > 200
