// convnet visualize: the page's script. No libraries, no network.
//
// The activations drawn are the engine's own (embedded by Python, float32, NHWC). When a unit is
// clicked, only that unit is recomputed here, in float64, from the embedded float32 inputs and
// weights, and shown beside the engine's value: the two must agree to 1e-5.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("cn-data").textContent);
  const LAYERS = DATA.layers;
  const INPUT_SHAPE = DATA.model.input_shape;
  const MAX_SLICES = 8;      // depth slices drawn in detail for one unit (all are summed)
  const TOP_CONTRIB = 12;    // FC: the largest contributions listed
  const MAP_TARGET = 76;     // CSS pixels for the longer side of an activation map
  const state = { sample: 0, unit: null, trail: [] };
  const cache = new Map();

  // ------------------------------------------------------------------------------ data access
  function decode(b64) {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Float32Array(bytes.buffer);
  }
  function cached(key, b64) {
    if (!cache.has(key)) cache.set(key, decode(b64));
    return cache.get(key);
  }
  // li = -1 is the network input (normalised); li >= 0 a layer's output
  function shapeOf(li) { return li < 0 ? INPUT_SHAPE : LAYERS[li].out_shape; }
  function act(s, li) {
    const smp = DATA.samples[s];
    return li < 0 ? cached(s + ":in", smp.input) : cached(s + ":" + li, smp.acts[li]);
  }
  function raw(s) { return cached(s + ":raw", DATA.samples[s].raw); }
  function weight(li, key) {
    const w = LAYERS[li].weights[key];
    return w ? cached("w" + li + ":" + key, w.data) : null;
  }
  // the layers a layer reads (indices into LAYERS; -1 is the network input): a chain reads the
  // layer before, a merge two or more, a branch's first layer the block's input
  function inputsOf(li) { return LAYERS[li].input_idx || [li - 1]; }
  function srcOf(li) { return inputsOf(li)[0]; }
  function nameOf(li) { return li < 0 ? "input" : LAYERS[li].name; }
  function prevName(li) { return li < 0 ? "the input (normalised)" : LAYERS[li].name; }
  // what input j of merge li is: its branch of the block, in short
  function laneText(li, j) {
    const lanes = LAYERS[li].lanes;
    if (!lanes || !lanes[j]) return `input ${j + 1}`;
    const lane = lanes[j];
    if (lane.role === "main") return "main branch";
    if (lane.role === "identity") return "shortcut: the block's input (identity)";
    if (lane.role === "shortcut") return lane.projection ? "shortcut: projection (inserted)" : "shortcut";
    return `branch ${j + 1} of ${lanes.length}`;
  }
  // where a layer sits in the blocks, innermost: "RES block of add4, shortcut: projection (inserted)"
  function placeText(li) {
    const path = LAYERS[li].block;
    if (!path || !path.length) return "";
    const [mj, lane] = path[path.length - 1];
    const kind = LAYERS[mj].kind === "ADD" ? "RES" : "CAT";
    return `${kind} block of ${LAYERS[mj].name} \u00b7 ${laneText(mj, lane)}`;
  }
  // "reads bn3 (main branch) + relu1 (shortcut ...)" for a merge; "reads add1" for a layer that
  // does not read the one listed before it
  function readsHtml(li) {
    if (li < 0) return "";
    const ins = inputsOf(li);
    if (ins.length > 1) {
      return `<p class="reads" data-inputs="${esc(ins.map(nameOf).join(","))}">reads ` +
        ins.map((k, j) => `<b>${esc(nameOf(k))}</b> <span class="muted">(${esc(laneText(li, j))})</span>`)
          .join(LAYERS[li].kind === "ADD" ? " + " : " | ") + "</p>";
    }
    return ins[0] === li - 1 ? "" : `<p class="reads" data-inputs="${esc(nameOf(ins[0]))}">reads <b>${esc(nameOf(ins[0]))}</b></p>`;
  }
  function unitIndex(shape, r, c, d) {
    return shape.length === 3 ? (r * shape[1] + c) * shape[2] + d : d;
  }

  // ------------------------------------------------------------------------------ formatting
  function esc(t) {
    return String(t).replace(/[&<>"']/g, (ch) => ({
      "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[ch]));
  }
  function f3(v) { return Number.isFinite(v) ? v.toFixed(3) : String(v); }
  function full(v) { return Number(v.toPrecision(10)).toString(); }
  function shapeText(sh) { return sh.join("x"); }
  function unitName(li, r, c, d) {
    const sh = shapeOf(li);
    const name = li < 0 ? "input" : LAYERS[li].name;
    return sh.length === 3 ? `${name}[row ${r}, col ${c}, depth ${d}]` : `${name}[${d}]`;
  }

  // ------------------------------------------------------------------------------ colours
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function ramp(stops, t) {
    t = Math.min(1, Math.max(0, t)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i;
    const a = stops[i], b = stops[i + 1];
    return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
  }
  const DIVERGING = [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130],
                     [178, 24, 43]];
  // one scale per layer: signed values get a diverging map centred on 0, others viridis
  function scaleFor(arr) {
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < arr.length; i++) { const v = arr[i]; if (v < lo) lo = v; if (v > hi) hi = v; }
    if (lo < 0 && hi > 0) {
      const m = Math.max(-lo, hi);
      return { lo: -m, hi: m, min: lo, max: hi, stops: DIVERGING };
    }
    if (hi - lo < 1e-12) return { lo: lo - 1, hi: hi + 1, min: lo, max: hi, stops: VIRIDIS };
    return { lo, hi, min: lo, max: hi, stops: VIRIDIS };
  }
  function colour(scale, v) { return ramp(scale.stops, (v - scale.lo) / (scale.hi - scale.lo)); }
  function gradientCss(stops) {
    return "linear-gradient(to right," + stops.map((c) => `rgb(${c.join(",")})`).join(",") + ")";
  }
  function legend(scale, label) {
    return `<span class="legend" title="${esc(label || "")}">${f3(scale.min)}` +
      `<span class="grad" style="background:${gradientCss(scale.stops)}"></span>${f3(scale.max)}` +
      "</span>";
  }

  // ------------------------------------------------------------------------------ drawing
  function makeCanvas(w, h) {
    const cv = document.createElement("canvas");
    cv.width = w; cv.height = h;
    return cv;
  }
  function paintMap(cv, arr, shape, d, scale) {
    const [H, W, D] = shape;
    const ctx = cv.getContext("2d");
    const img = ctx.createImageData(W, H);
    for (let r = 0; r < H; r++) {
      for (let c = 0; c < W; c++) {
        const rgb = colour(scale, arr[(r * W + c) * D + d]);
        const o = (r * W + c) * 4;
        img.data[o] = rgb[0]; img.data[o + 1] = rgb[1]; img.data[o + 2] = rgb[2]; img.data[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
  }
  function paintVector(cv, arr, scale) {
    const ctx = cv.getContext("2d");
    const img = ctx.createImageData(arr.length, 1);
    for (let i = 0; i < arr.length; i++) {
      const rgb = colour(scale, arr[i]);
      img.data[4 * i] = rgb[0]; img.data[4 * i + 1] = rgb[1]; img.data[4 * i + 2] = rgb[2];
      img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }
  // raw image pixels in [0, 1]: grey, RGB, or the first channel of anything else
  function paintImage(ctx, arr, shape, ox, oy) {
    const [H, W, D] = shape;
    const img = ctx.createImageData(W, H);
    for (let i = 0; i < H * W; i++) {
      const g = (k) => Math.round(255 * Math.min(1, Math.max(0, arr[i * D + k])));
      const rgb = D === 3 ? [g(0), g(1), g(2)] : [g(0), g(0), g(0)];
      img.data[4 * i] = rgb[0]; img.data[4 * i + 1] = rgb[1]; img.data[4 * i + 2] = rgb[2];
      img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, ox, oy);
  }
  function mapScale(H, W) { return Math.max(1, Math.floor(MAP_TARGET / Math.max(H, W))); }
  function thumb(s, cls) {
    const b = document.createElement("button");
    const smp = DATA.samples[s];
    const [H, W] = INPUT_SHAPE;
    const cv = makeCanvas(W, H);
    paintImage(cv.getContext("2d"), raw(s), INPUT_SHAPE, 0, 0);
    b.className = "thumb " + cls;
    b.dataset.sample = s;
    b.title = smp.title + (smp.pred !== undefined ? " (predicted " + DATA.classes[smp.pred] + ")" : "");
    b.appendChild(cv);
    if (smp.label !== null && smp.label !== undefined) {
      const cap = document.createElement("span");
      cap.className = "cap";
      cap.textContent = DATA.classes[smp.label];
      b.appendChild(cap);
    }
    b.addEventListener("click", () => select(s));
    return b;
  }

  // ------------------------------------------------------------------------------ gallery
  function buildGalleries() {
    const g = document.getElementById("cn-gallery");
    const wrong = document.getElementById("cn-wrong");
    DATA.samples.forEach((smp, s) => {
      let cls = "";
      if (smp.label !== null && smp.label !== undefined && smp.pred !== undefined) {
        cls = smp.pred === smp.label ? "right" : "wrong";
      }
      g.appendChild(thumb(s, cls));
      if (smp.source === "wrong") wrong.appendChild(thumb(s, "wrong"));
    });
    if (!wrong.children.length) {
      wrong.innerHTML = '<p class="muted">No test set was given, or the model made no mistakes ' +
        "on the images evaluated.</p>";
    }
  }

  // ------------------------------------------------------------------------------ layers
  function buildLayers() {
    const root = document.getElementById("cn-layers");
    LAYERS.forEach((m, li) => {
      const div = document.createElement("div");
      div.className = "layer";
      div.id = "layer-" + li;
      const path = m.block || [];   // inside blocks: indented, a bar in the block's colour
      if (path.length) {
        const inner = LAYERS[path[path.length - 1][0]].kind;
        div.classList.add("in-block", inner === "ADD" ? "in-res" : "in-cat");
        div.style.marginLeft = (path.length - 1) * 14 + "px";
      }
      const sh = m.out_shape;
      let info = "";
      if (sh.length === 3 && m.maps_shown < sh[2]) info = ` (showing ${m.maps_shown} of ${sh[2]} maps)`;
      const place = placeText(li);
      const ins = inputsOf(li);
      const inShape = ins.length > 1 ? ins.map((k) => shapeText(shapeOf(k))).join(m.kind === "ADD" ? " + " : " | ")
        : shapeText(m.in_shape);
      div.innerHTML = `<div class="layer-head"><span class="lname">${esc(m.name)}</span>` +
        `<code class="lspec">${esc(m.spec)}</code><span class="lshape">${inShape}` +
        ` &rarr; ${shapeText(sh)}</span><span class="muted">${info}</span>` +
        (place ? `<span class="place">${esc(place)}</span>` : "") +
        `<span class="legend-slot"></span></div>${readsHtml(li)}<div class="maps"></div>`;
      const maps = div.querySelector(".maps");
      if (sh.length === 3) {
        const k = mapScale(sh[0], sh[1]);
        for (let d = 0; d < m.maps_shown; d++) {
          const wrap = document.createElement("div");
          wrap.className = "map";
          const cv = makeCanvas(sh[1], sh[0]);
          cv.style.width = sh[1] * k + "px"; cv.style.height = sh[0] * k + "px";
          cv.dataset.layer = li; cv.dataset.depth = d;
          cv.title = `${m.name} map ${d}`;
          cv.addEventListener("click", (ev) => {
            const r = Math.min(sh[0] - 1, Math.floor(ev.offsetY / cv.clientHeight * sh[0]));
            const c = Math.min(sh[1] - 1, Math.floor(ev.offsetX / cv.clientWidth * sh[1]));
            explainUnit(li, Math.max(0, r), Math.max(0, c), d);
          });
          wrap.appendChild(cv);
          const idx = document.createElement("span");
          idx.className = "idx"; idx.textContent = d;
          wrap.appendChild(idx);
          maps.appendChild(wrap);
        }
      } else {
        const wrap = document.createElement("div");
        wrap.className = "map vector";
        const n = sh[0];
        const cv = makeCanvas(n, 1);
        const cell = Math.max(2, Math.min(22, Math.floor(640 / n)));
        cv.style.width = n * cell + "px";
        cv.dataset.layer = li;
        cv.title = `${m.name}: ${n} values; click one`;
        cv.addEventListener("click", (ev) => {
          const i = Math.min(n - 1, Math.max(0, Math.floor(ev.offsetX / cv.clientWidth * n)));
          explainUnit(li, 0, 0, i);
        });
        wrap.appendChild(cv);
        maps.appendChild(wrap);
      }
      if (["CONV", "DWCONV", "DECONV"].includes(m.kind) && m.weights.W) div.appendChild(filterBlock(li));
      root.appendChild(div);
    });
  }

  function filterBlock(li) {
    const m = LAYERS[li];
    const W = weight(li, "W");
    const [a, fh, fw, b] = m.weights.W.shape;
    // CONV W is (K, F, F, D); DECONV W is (D_in, F, F, K): filter k of a DECONV is W[:, :, :, k]
    const deconv = m.kind === "DECONV";
    const K = deconv ? b : a, D = deconv ? a : b;
    let absmax = 1e-12;
    for (let i = 0; i < W.length; i++) absmax = Math.max(absmax, Math.abs(W[i]));
    const scale = { lo: -absmax, hi: absmax, min: -absmax, max: absmax, stops: DIVERGING };
    const det = document.createElement("details");
    det.className = "filters";
    if (li === LAYERS.findIndex((x) => ["CONV", "DWCONV", "DECONV"].includes(x.kind))) det.open = true;
    const shownK = Math.min(K, m.maps_shown || K);
    const rgb = D === 3 && m.in_shape[2] === 3 && srcOf(li) < 0;
    const G = m.groups || 1;
    const shownD = rgb ? 1 : Math.min(D, MAX_SLICES);
    det.innerHTML = `<summary>filters: ${K} of ${fh}x${fw}x${D}` +
      (shownK < K ? ` (showing ${shownK})` : "") + (!rgb && shownD < D ? `, first ${shownD} depth slices each` : "") +
      (rgb ? ", drawn as RGB" : "") +
      (G > 1 && D === 1 ? `; depthwise: filter k reads only input slice ${K === G ? "k" : `floor(k/${K / G})`}` : "") +
      (G > 1 && D > 1 ? `; ${G} groups of ${K / G} filters: filter k reads only input slices ${D}g..${D}g+${D - 1}, ` +
        `g = floor(k/${K / G})` : "") +
      " " + legend(scale, "weights") + "</summary>";
    const grid = document.createElement("div");
    grid.className = "filter-grid";
    const at = (k, i, j, d) => deconv ? W[((d * fh + i) * fw + j) * K + k] : W[((k * fh + i) * fw + j) * D + d];
    const px = Math.max(3, Math.floor(30 / Math.max(fh, fw)));
    for (let k = 0; k < shownK; k++) {
      const f = document.createElement("div");
      f.className = "filter";
      f.innerHTML = `<span class="k">${k}</span>`;
      for (let d = 0; d < shownD; d++) {
        const cv = makeCanvas(fw, fh);
        cv.style.width = fw * px + "px"; cv.style.height = fh * px + "px";
        const ctx = cv.getContext("2d");
        const img = ctx.createImageData(fw, fh);
        for (let i = 0; i < fh; i++) {
          for (let j = 0; j < fw; j++) {
            const o = (i * fw + j) * 4;
            const c = rgb ? [0, 1, 2].map((ch) => 127.5 + 127.5 * at(k, i, j, ch) / absmax)
              : colour(scale, at(k, i, j, d));
            img.data[o] = c[0]; img.data[o + 1] = c[1]; img.data[o + 2] = c[2]; img.data[o + 3] = 255;
          }
        }
        ctx.putImageData(img, 0, 0);
        cv.title = `filter ${k}` + (rgb ? "" : `, depth slice ${d}`);
        f.appendChild(cv);
      }
      grid.appendChild(f);
    }
    det.appendChild(grid);
    return det;
  }

  function paintLayers() {
    const s = state.sample;
    LAYERS.forEach((m, li) => {
      const arr = act(s, li);
      const scale = scaleFor(arr);
      const div = document.getElementById("layer-" + li);
      div.querySelector(".legend-slot").innerHTML = legend(scale, "shared by every map of " + m.name);
      div.querySelectorAll("canvas[data-layer]").forEach((cv) => {
        if (m.out_shape.length === 3) paintMap(cv, arr, m.out_shape, +cv.dataset.depth, scale);
        else paintVector(cv, arr, scale);
      });
    });
  }

  // ------------------------------------------------------------------------------ input, probs
  const inputView = { margin: 0, k: 1 };
  function setupInput() {
    const [H, W] = INPUT_SHAPE;
    // show some of the zero padding around the image: receptive fields run over the border
    inputView.margin = Math.max(1, Math.round(0.2 * Math.max(H, W)));
    const m = inputView.margin;
    inputView.k = Math.max(1, Math.floor(300 / (Math.max(H, W) + 2 * m)));
    const k = inputView.k;
    for (const id of ["cn-input-canvas", "cn-rf-canvas"]) {
      const cv = document.getElementById(id);
      cv.width = (W + 2 * m) * k; cv.height = (H + 2 * m) * k;
    }
  }
  function paintInput() {
    const [H, W] = INPUT_SHAPE, m = inputView.margin, k = inputView.k;
    const small = makeCanvas(W + 2 * m, H + 2 * m);
    const ctx = small.getContext("2d");
    ctx.fillStyle = "#dee2e6";
    ctx.fillRect(0, 0, W + 2 * m, H + 2 * m);
    paintImage(ctx, raw(state.sample), INPUT_SHAPE, m, m);
    const big = document.getElementById("cn-input-canvas").getContext("2d");
    big.imageSmoothingEnabled = false;
    big.drawImage(small, 0, 0, (W + 2 * m) * k, (H + 2 * m) * k);
  }
  function paintProbs() {
    const smp = DATA.samples[state.sample];
    const box = document.getElementById("cn-probs");
    document.getElementById("cn-sample-title").textContent = smp.title +
      (smp.label !== null && smp.label !== undefined ? " \u00b7 true class: " + DATA.classes[smp.label] : "");
    document.getElementById("cn-sample-notes").textContent = (smp.notes || []).join("; ");
    if (!smp.probs) { box.innerHTML = '<p class="muted">The model outputs a volume, not class scores.</p>'; return; }
    const order = smp.probs.map((p, i) => i);
    if (order.length > 20) order.sort((a, b) => smp.probs[b] - smp.probs[a]).splice(20);
    box.innerHTML = order.map((i) => {
      const p = smp.probs[i];
      const cls = (i === smp.pred ? " pred" : "") + (i === smp.label ? " truth" : "");
      return `<div class="prob${cls}" data-class="${i}"><span class="name" title="${esc(DATA.classes[i])}">` +
        `${esc(DATA.classes[i])}</span><span class="bar" style="width:${Math.max(1, 220 * p).toFixed(1)}px">` +
        `</span><span class="pct">${(100 * p).toFixed(2)}%</span></div>`;
    }).join("") + (smp.probs.length > 20 ? `<p class="muted">top 20 of ${smp.probs.length} classes</p>` : "");
  }

  // ------------------------------------------------------------------------------ RF outline
  function rfBox(li, r, c) {
    const [H, W] = INPUT_SHAPE;
    if (li < 0) return { top: r, bottom: r, left: c, right: c };
    const rf = LAYERS[li].rf;
    if (rf.whole || LAYERS[li].out_shape.length !== 3) {
      return { top: 0, bottom: H - 1, left: 0, right: W - 1, whole: true };
    }
    const cr = rf.start[0] + r * rf.jump[0], cc = rf.start[1] + c * rf.jump[1];
    const hr = (rf.size[0] - 1) / 2, hc = (rf.size[1] - 1) / 2;
    return { top: cr - hr, bottom: cr + hr, left: cc - hc, right: cc + hc };
  }
  function drawRf(li, r, c) {
    const cv = document.getElementById("cn-rf-canvas");
    const ctx = cv.getContext("2d");
    ctx.clearRect(0, 0, cv.width, cv.height);
    const b = rfBox(li, r, c);
    const m = inputView.margin, k = inputView.k;
    const x0 = (b.left + m) * k, y0 = (b.top + m) * k;
    const w = (b.right - b.left + 1) * k, h = (b.bottom - b.top + 1) * k;
    ctx.fillStyle = "rgba(255, 146, 43, 0.22)";
    ctx.fillRect(x0, y0, w, h);
    ctx.lineWidth = Math.max(2, Math.round(k / 4));
    ctx.strokeStyle = "#ff6b00";
    ctx.strokeRect(x0 + 1, y0 + 1, w - 2, h - 2);
    const [H, W] = INPUT_SHAPE;
    const clip = (v, n) => Math.min(n - 1, Math.max(0, v));
    const txt = b.whole ? `Receptive field: the whole ${H}x${W} input.`
      : `Receptive field: rows ${full(b.top)}..${full(b.bottom)}, cols ${full(b.left)}..${full(b.right)} ` +
        `(${full(b.bottom - b.top + 1)}x${full(b.right - b.left + 1)} pixels` +
        ((b.top < 0 || b.left < 0 || b.bottom > H - 1 || b.right > W - 1)
          ? `; inside the image: rows ${clip(Math.ceil(b.top), H)}..${clip(Math.floor(b.bottom), H)}, ` +
            `cols ${clip(Math.ceil(b.left), W)}..${clip(Math.floor(b.right), W)}; the rest is padding` : "") + ").";
    const el = document.getElementById("cn-rf-text");
    el.textContent = txt;
    el.className = "rf-shown";
    el.dataset.box = JSON.stringify(b);
  }

  // ------------------------------------------------------------------------------ markers
  function clearMarks() { document.querySelectorAll(".mark").forEach((e) => e.remove()); }
  function mark(li, d, r0, c0, r1, c1, cls) {
    const cv = document.querySelector(`canvas[data-layer="${li}"][data-depth="${d}"]`);
    if (!cv) return;
    const sh = LAYERS[li].out_shape;
    const kx = cv.clientWidth / sh[1], ky = cv.clientHeight / sh[0];
    r0 = Math.max(0, r0); c0 = Math.max(0, c0); r1 = Math.min(sh[0] - 1, r1); c1 = Math.min(sh[1] - 1, c1);
    if (r1 < r0 || c1 < c0) return;
    const div = document.createElement("div");
    div.className = "mark " + (cls || "");
    div.style.left = 1 + c0 * kx + "px"; div.style.top = 1 + r0 * ky + "px";
    div.style.width = (c1 - c0 + 1) * kx + "px"; div.style.height = (r1 - r0 + 1) * ky + "px";
    cv.parentElement.appendChild(div);
  }
  function markVector(li, i) {
    const cv = document.querySelector(`canvas[data-layer="${li}"]`);
    if (!cv) return;
    const n = LAYERS[li].out_shape[0], kx = cv.clientWidth / n;
    const div = document.createElement("div");
    div.className = "mark";
    div.style.left = 1 + i * kx + "px"; div.style.top = "0px";
    div.style.width = Math.max(2, kx) + "px"; div.style.height = cv.clientHeight + 2 + "px";
    cv.parentElement.appendChild(div);
  }

  // ------------------------------------------------------------------------------ explanations
  // Every explainer returns {value (float64, recomputed here), html, next}: `next` lists the
  // units of the layer(s) read that the walk back to the input can follow (an ADD: each
  // summand; a CONV: the largest term of its dot product; a CAT: the unit it copies; ...).
  function numsTable(vals, fh, fw, cls) {
    let h = '<table class="nums">';
    for (let i = 0; i < fh; i++) {
      h += "<tr>";
      for (let j = 0; j < fw; j++) {
        const v = vals[i * fw + j];
        const c = cls ? cls[i * fw + j] : "";
        h += `<td class="${c}">${v === null ? "pad" : f3(v)}</td>`;
      }
      h += "</tr>";
    }
    return h + "</table>";
  }
  function unitAt(shape, idx) {   // (r, c, d) of a flat NHWC index
    if (shape.length !== 3) return { r: 0, c: 0, d: idx };
    const D = shape[2], W = shape[1];
    const d = idx % D, p = (idx - d) / D, c = p % W;
    return { r: (p - c) / W, c, d };
  }
  function markUnit(li, r, c, d) {
    if (li < 0) return;
    if (shapeOf(li).length === 3) mark(li, d, r, c, r, c, "window");
    else markVector(li, d);
  }

  // CONV: z = sum_{i,j,d} x[r*S - P + i*dil, c*S - P + j*dil, d] * W[k, i, j, d - g*D/G] + b[k],
  // d over the D/G input slices of filter k's group g = floor(k / (K/G)) (G = 1: all D slices;
  // DWCONV: G = D, one slice). W is (K, F, F, D/G).
  function explainConv(li, r, c, k) {
    const m = LAYERS[li], s = state.sample, inp = srcOf(li);
    const x = act(s, inp), [H, W, D] = shapeOf(inp);
    const Wt = weight(li, "W"), b = weight(li, "b"), K = m.out_shape[2];
    const G = m.groups || 1, Dg = D / G, g = Math.floor(k / (K / G)), d0 = g * Dg;
    const [fh, fw] = m.window.F, [sr, sc] = m.window.S, [pr, pc] = m.window.P, [dr, dc] = m.window.dilation;
    let sum = 0, best = null;
    const partial = new Array(Dg).fill(0);
    let slices = "";
    for (let dd = 0; dd < Dg; dd++) {
      const d = d0 + dd;
      const win = [], fil = [], cls = [];
      for (let i = 0; i < fh; i++) {
        for (let j = 0; j < fw; j++) {
          const y = r * sr - pr + i * dr, xx = c * sc - pc + j * dc;
          const inside = y >= 0 && y < H && xx >= 0 && xx < W;
          const v = inside ? x[(y * W + xx) * D + d] : 0;
          const w = Wt[((k * fh + i) * fw + j) * Dg + dd];
          partial[dd] += v * w;
          if (inside && (!best || Math.abs(v * w) > Math.abs(best.t))) best = { t: v * w, r: y, c: xx, d };
          win.push(inside ? v : null); fil.push(w); cls.push(inside ? "" : "pad");
        }
      }
      sum += partial[dd];
      if (dd < MAX_SLICES) {
        slices += `<div class="slice"><span class="lab">depth ${d}</span>${numsTable(win, fh, fw, cls)}` +
          `<span class="op">&middot;</span>${numsTable(fil, fh, fw)}<span class="op">= ${f3(partial[dd])}</span></div>`;
      }
    }
    const bias = b ? b[k] : 0;
    const value = sum + bias;
    const r0 = r * sr - pr, c0 = c * sc - pc;
    const r1 = r0 + (fh - 1) * dr, c1 = c0 + (fw - 1) * dc;
    for (let d = d0; d < d0 + Dg; d++) mark(inp, d, r0, c0, r1, c1, "window");
    const more = Dg > MAX_SLICES ? `<p class="muted">Depth slices ${d0 + MAX_SLICES}..${d0 + Dg - 1} (not drawn) add ` +
      `${f3(partial.slice(MAX_SLICES).reduce((a, v) => a + v, 0))}.</p>` : "";
    let group = "";
    if (G > 1) {
      const what = m.kind === "DWCONV" || Dg === 1
        ? `A depthwise CONV: one ${fh}x${fw} filter per input depth slice, so filter ${k} reads ` +
          `only depth slice ${d0} of ${esc(nameOf(inp))}`
        : `A grouped CONV (G=${G}): the ${K} filters and the ${D} input slices are split into ${G} ` +
          `groups; filter ${k} is in group ${g} (filters ${g * K / G}..${(g + 1) * K / G - 1}) and reads ` +
          `only input depth slices ${d0}..${d0 + Dg - 1}`;
      group = `<p id="cn-group" data-group="${g}" data-first="${d0}" data-last="${d0 + Dg - 1}">${what}; ` +
        `its weights are ${fh}x${fw}x${Dg} (W is ${K}x${fh}x${fw}x${Dg}).</p>`;
    }
    const html = group + `<p>The ${fh}x${fw}x${Dg} window of ${esc(prevName(inp))} at rows ${r0}..${r1}, cols ${c0}..${c1}` +
      (G > 1 ? `, depth ${d0}..${d0 + Dg - 1}` : "") +
      ` (stride ${m.window.S.join("x")}, padding ${m.window.P.join("x")}; grey cells are zero padding),` +
      ` times filter ${k} of ${m.name}, slice by slice:</p>` +
      `<div class="slices">${slices}</div>${more}` +
      `<div class="formula" id="cn-dot">dot product &Sigma; window &middot; filter = ${full(sum)}<br>` +
      `+ bias b[${k}] = ${full(bias)}<br>= ${full(value)}</div>`;
    const next = best ? [{ li: inp, r: best.r, c: best.c, d: best.d, why: `the largest term, x&middot;w = ${f3(best.t)}` }] : [];
    return { value, html, dot: sum, bias, next };
  }

  // DECONV: every input unit scatters W[d, i, j, k] * x[iy, ix, d] to output (iy*S - P + i*dil, ...)
  function explainDeconv(li, r, c, k) {
    const m = LAYERS[li], s = state.sample, inp = srcOf(li);
    const x = act(s, inp), [H, W, D] = shapeOf(inp);
    const Wt = weight(li, "W"), b = weight(li, "b"), K = m.out_shape[2];
    const [fh, fw] = m.window.F, [sr, sc] = m.window.S, [pr, pc] = m.window.P, [dr, dc] = m.window.dilation;
    let sum = 0, best = null;
    const rows = [];
    for (let i = 0; i < fh; i++) {
      const ny = r + pr - i * dr;
      if (ny % sr !== 0 || ny < 0 || ny / sr >= H) continue;
      const iy = ny / sr;
      for (let j = 0; j < fw; j++) {
        const nx = c + pc - j * dc;
        if (nx % sc !== 0 || nx < 0 || nx / sc >= W) continue;
        const ix = nx / sc;
        let part = 0;
        for (let d = 0; d < D; d++) {
          const t = x[(iy * W + ix) * D + d] * Wt[((d * fh + i) * fw + j) * K + k];
          part += t;
          if (!best || Math.abs(t) > Math.abs(best.t)) best = { t, r: iy, c: ix, d };
        }
        sum += part;
        rows.push(`<tr><td>(${iy}, ${ix})</td><td>(${i}, ${j})</td><td>${f3(part)}</td></tr>`);
        for (let d = 0; d < Math.min(D, 64); d++) mark(inp, d, iy, ix, iy, ix, "window");
      }
    }
    const bias = b ? b[k] : 0;
    const value = sum + bias;
    const html = `<p>A transposed CONV scatters each unit of ${esc(prevName(inp))} through the filter taps; this output ` +
      `unit receives ${rows.length} of them (stride ${m.window.S.join("x")} leaves gaps):</p>` +
      `<table class="contrib"><tr><th>input (row, col)</th><th>tap (i, j)</th><th>&Sigma;<sub>d</sub> x&middot;w</th></tr>` +
      rows.join("") + "</table>" +
      `<div class="formula" id="cn-dot">dot product &Sigma; = ${full(sum)}<br>+ bias b[${k}] = ${full(bias)}` +
      `<br>= ${full(value)}</div>`;
    const next = best ? [{ li: inp, r: best.r, c: best.c, d: best.d, why: `the largest term, x&middot;w = ${f3(best.t)}` }] : [];
    return { value, html, dot: sum, bias, next };
  }

  function explainPool(li, r, c, d, avg) {
    const m = LAYERS[li], s = state.sample, inp = srcOf(li);
    const x = act(s, inp), [H, W, D] = shapeOf(inp);
    const [fh, fw] = m.window.F, [sr, sc] = m.window.S, [pr, pc] = m.window.P;
    const vals = [], cls = [], pos = [];
    let best = -Infinity, bi = -1, sum = 0, big = -1;
    for (let i = 0; i < fh; i++) {
      for (let j = 0; j < fw; j++) {
        const y = r * sr - pr + i, xx = c * sc - pc + j;
        const inside = y >= 0 && y < H && xx >= 0 && xx < W;
        const v = inside ? x[(y * W + xx) * D + d] : null;
        vals.push(v); cls.push(inside ? "" : "pad"); pos.push([y, xx]);
        if (inside) {
          sum += v;
          if (v > best) { best = v; bi = vals.length - 1; }
          if (big < 0 || Math.abs(v) > Math.abs(vals[big])) big = vals.length - 1;
        }
      }
    }
    const r0 = r * sr - pr, c0 = c * sc - pc;
    mark(inp, d, r0, c0, r0 + fh - 1, c0 + fw - 1, "window");
    const prev = esc(inp < 0 ? "the input" : LAYERS[inp].name);
    const follow = (k, why) => (k < 0 ? [] : [{ li: inp, r: pos[k][0], c: pos[k][1], d, why }]);
    if (avg) {
      const value = sum / (fh * fw);  // padded zeros count in the mean (PyTorch's default)
      return { value, next: follow(big, "the largest term"), html: `<p>The ${fh}x${fw} window of depth slice ${d} of ${prev}:</p>` +
        numsTable(vals, fh, fw, cls) + `<div class="formula" id="cn-dot">mean = ${full(sum)} / ${fh * fw} = ${full(value)}</div>` };
    }
    if (bi >= 0) cls[bi] = "max";
    return { value: best, next: follow(bi, "the maximum"), html: `<p>The ${fh}x${fw} window of depth slice ${d} of ${prev} ` +
      `(rows ${r0}..${r0 + fh - 1}, cols ${c0}..${c0 + fw - 1}); padding never wins:</p>` +
      numsTable(vals, fh, fw, cls) + `<div class="formula" id="cn-dot">max = ${full(best)}</div>` };
  }

  function explainGap(li, d) {
    const s = state.sample, inp = srcOf(li), x = act(s, inp), [H, W, D] = shapeOf(inp);
    let sum = 0, big = 0;
    for (let i = 0; i < H * W; i++) {
      sum += x[i * D + d];
      if (Math.abs(x[i * D + d]) > Math.abs(x[big * D + d])) big = i;
    }
    mark(inp, d, 0, 0, H - 1, W - 1, "window");
    const value = sum / (H * W);
    const bc = big % W, br = (big - bc) / W;
    return { value, next: [{ li: inp, r: br, c: bc, d, why: "the largest term" }],
      html: `<p>The mean of the whole ${H}x${W} depth slice ${d} of ${esc(nameOf(inp))}:</p>` +
      `<div class="formula" id="cn-dot">&Sigma; = ${full(sum)}; / ${H * W} = ${full(value)}</div>` };
  }

  function volumePos(shape, idx) {
    if (shape.length !== 3) return `${idx}`;
    const u = unitAt(shape, idx);
    return `(${u.r}, ${u.c}, ${u.d})`;
  }

  function explainFc(li, k) {
    const m = LAYERS[li], s = state.sample, inp = srcOf(li);
    const x = act(s, inp), ish = shapeOf(inp);
    const Wt = weight(li, "W"), b = weight(li, "b"), K = m.out_shape[0];
    const n = x.length;
    const contrib = new Float64Array(n);
    let sum = 0;
    for (let i = 0; i < n; i++) { contrib[i] = x[i] * Wt[i * K + k]; sum += contrib[i]; }
    const order = Array.from(contrib.keys()).sort((a, bb) => Math.abs(contrib[bb]) - Math.abs(contrib[a]));
    const top = order.slice(0, TOP_CONTRIB);
    let rest = sum;
    const rows = top.map((i) => {
      rest -= contrib[i];
      return `<tr><td>${i}</td><td>${volumePos(ish, i)}</td><td>${f3(x[i])}</td><td>${f3(Wt[i * K + k])}</td>` +
        `<td>${f3(contrib[i])}</td></tr>`;
    }).join("");
    const bias = b ? b[k] : 0;
    const value = sum + bias;
    top.slice(0, 6).forEach((i) => { const u = unitAt(ish, i); markUnit(inp, u.r, u.c, u.d); });
    const flat = ish.length === 3 ? ` The ${shapeText(ish)} volume is read as ${n} features, index = ` +
      `(row&middot;${ish[1]} + col)&middot;${ish[2]} + depth (see Flattening).` : "";
    const html = `<p>A dot product of all ${n} inputs (${esc(prevName(inp))}) with column ${k} of W (${n}x${K}).${flat} ` +
      `The ${top.length} largest contributions:</p><table class="contrib"><tr><th>index</th>` +
      `<th>${ish.length === 3 ? "(row, col, depth)" : "input"}</th><th>x</th><th>w</th><th>x&middot;w</th></tr>${rows}</table>` +
      `<p class="muted">the other ${n - top.length} contributions add ${full(rest)}</p>` +
      `<div class="formula" id="cn-dot">dot product &Sigma; x&middot;w = ${full(sum)}<br>+ bias b[${k}] = ` +
      `${full(bias)}<br>= ${full(value)}</div>`;
    const next = top.length ? [{ ...unitAt(ish, top[0]), li: inp, why: `the largest term, x&middot;w = ${f3(contrib[top[0]])}` }] : [];
    return { value, html, dot: sum, bias, next };
  }

  function explainElementwise(li, r, c, d) {
    const m = LAYERS[li], s = state.sample, inp = srcOf(li), sh = shapeOf(inp);
    const z = act(s, inp)[unitIndex(sh, r, c, d)];
    markUnit(inp, r, c, d);
    let value, f;
    switch (m.kind) {
      case "RELU": value = Math.max(0, z); f = `max(0, z) = max(0, ${full(z)})`; break;
      case "RELU6": value = Math.min(Math.max(0, z), 6); f = `min(max(0, z), 6) = min(max(0, ${full(z)}), 6)`; break;
      case "LRELU": value = z > 0 ? z : m.alpha * z; f = `z > 0 ? z : ${m.alpha}&middot;z, z = ${full(z)}`; break;
      case "TANH": value = Math.tanh(z); f = `tanh(${full(z)})`; break;
      case "SIGMOID": value = 1 / (1 + Math.exp(-z)); f = `1 / (1 + exp(-${full(z)}))`; break;
      case "DROPOUT": value = z; f = `identity at evaluation (dropout p=${m.p} only acts in training): z = ${full(z)}`; break;
      case "BN": {
        const g = weight(li, "gamma")[d], be = weight(li, "beta")[d];
        const mu = weight(li, "running_mean")[d], v = weight(li, "running_var")[d];
        value = g * (z - mu) / Math.sqrt(v + m.eps) + be;
        f = `&gamma;(z - mean)/&radic;(var + eps) + &beta; = ${f3(g)}&middot;(${full(z)} - ${f3(mu)})/&radic;(${f3(v)} + ${m.eps}) + ${f3(be)}`;
        break;
      }
      default: value = z; f = `z = ${full(z)}`;
    }
    return { value, next: [{ li: inp, r, c, d, why: "z" }],
      html: `<p>z is the same unit of ${esc(nameOf(inp))}.</p><div class="formula" id="cn-dot">${f}<br>= ${full(value)}</div>` };
  }

  function explainFlatten(li, i) {
    const inp = srcOf(li), sh = shapeOf(inp), x = act(state.sample, inp);
    const u = unitAt(sh, i);
    markUnit(inp, u.r, u.c, u.d);
    return { value: x[i], next: [{ ...u, li: inp, why: "the same value" }],
      html: `<p>Feature ${i} is unit ${volumePos(sh, i)} of the ${shapeText(sh)} volume of ${esc(nameOf(inp))}: ` +
      `index = (row&middot;${sh[1]} + col)&middot;${sh[2]} + depth.</p><div class="formula" id="cn-dot">= ${full(x[i])}</div>` };
  }

  // ADD: the same unit of every input, summed (a residual block: the main branch's F(x) + x)
  function explainAdd(li, r, c, d) {
    const m = LAYERS[li], s = state.sample, srcs = inputsOf(li);
    let sum = 0, rows = "";
    const terms = [], next = [];
    srcs.forEach((inp, j) => {
      const v = act(s, inp)[unitIndex(shapeOf(inp), r, c, d)];
      sum += v;
      terms.push(full(v));
      const lane = laneText(li, j);
      rows += `<tr class="summand" data-input="${esc(nameOf(inp))}" data-value="${v}"><td class="op">${j ? "+" : ""}</td>` +
        `<td><b>${esc(nameOf(inp))}</b></td><td class="muted">${esc(lane)}</td><td class="v">${full(v)}</td></tr>`;
      markUnit(inp, r, c, d);
      next.push({ li: inp, r, c, d, why: lane });
    });
    const where = shapeOf(li).length === 3 ? `row ${r}, col ${c}, depth ${d}` : `index ${d}`;
    const html = `<p>An ADD: the unit at the same position (${where}) of each of its ${srcs.length} inputs, ` +
      `summed` + (m.lanes && m.lanes.some((l) => l.role === "identity")
        ? ": the main branch's output F(x) plus the block's input x itself." : ".") + `</p>` +
      `<table class="summands" id="cn-summands">${rows}<tr class="total"><td class="op">=</td><td colspan="2">sum</td>` +
      `<td class="v" id="cn-sum">${full(sum)}</td></tr></table>` +
      `<div class="formula" id="cn-dot">${terms.join(" + ")}<br>= ${full(sum)}</div>` +
      `<p class="muted">Pick a summand below to follow its branch back to the input.</p>`;
    return { value: sum, html, next };
  }

  // CAT: the inputs stacked along depth; a unit is one unit of one input, copied
  function explainCat(li, r, c, d) {
    const m = LAYERS[li], s = state.sample, srcs = inputsOf(li), offs = m.offsets;
    let j = offs.length - 1;
    while (j > 0 && d < offs[j]) j--;
    const inp = srcs[j], sh = shapeOf(inp), dd = d - offs[j];
    const value = act(s, inp)[unitIndex(sh, r, c, dd)];
    markUnit(inp, r, c, dd);
    const vec = sh.length !== 3;
    const rows = srcs.map((sj, q) => {
      const n = shapeOf(sj)[shapeOf(sj).length - 1];
      return `<tr class="${q === j ? "from" : ""}"><td>${offs[q]}..${offs[q] + n - 1}</td><td><b>${esc(nameOf(sj))}</b>` +
        `</td><td class="muted">${esc(laneText(li, q))}</td><td>0..${n - 1}</td></tr>`;
    }).join("");
    const unit = vec ? "index" : "depth";
    const html = `<p id="cn-cat-src" data-input="${esc(nameOf(inp))}" data-depth="${dd}" data-branch="${j}">` +
      `${unit[0].toUpperCase() + unit.slice(1)} ${d} of ${esc(m.name)} is ${unit} ${dd} of <b>${esc(nameOf(inp))}</b> ` +
      `(${esc(laneText(li, j))}, input ${j + 1} of ${srcs.length}): a CAT stacks its inputs along ${vec ? "the features" : "depth"} ` +
      `and computes nothing.</p><table class="contrib cat-map"><tr><th>${esc(m.name)} ${unit}</th><th>input</th>` +
      `<th>branch</th><th>its ${unit}</th></tr>${rows}</table>` +
      `<div class="formula" id="cn-dot">${esc(m.name)}[${vec ? d : `${r}, ${c}, ${d}`}] = ${esc(nameOf(inp))}[${vec ? dd : `${r}, ${c}, ${dd}`}]` +
      `<br>= ${full(value)}</div>`;
    return { value, html, next: [{ li: inp, r, c, d: dd, why: "the unit copied" }] };
  }

  // a pixel of the network's input: the walk back ends here
  function explainInput(r, c, d) {
    const s = state.sample, idx = unitIndex(INPUT_SHAPE, r, c, d);
    const x = raw(s)[idx], value = act(s, -1)[idx], nz = DATA.model.normalizer;
    const f = nz ? `(x - mean) / std = (${full(x)} - ${f3(nz.mean[d])}) / ${f3(nz.std[d])}` : `x = ${full(x)}`;
    return { value, next: [], html: `<p>A pixel of the input image (channel ${d}), as the first layers read it` +
      (nz ? ", normalised with the training set's mean and std" : "") + `. The walk back ends here.</p>` +
      `<div class="formula" id="cn-dot">${f}<br>= ${full(value)}</div>` };
  }

  // the numbers of one unit: {value (float64, this page), engine (the embedded float32), html, next}
  function explain(li, r, c, d) {
    if (li < 0) {
      const out = explainInput(r, c, d);
      out.engine = out.value;
      out.kind = "INPUT";
      return out;
    }
    const m = LAYERS[li];
    const sh = m.out_shape;
    const engine = act(state.sample, li)[unitIndex(sh, r, c, d)];
    const needW = ["CONV", "DWCONV", "DECONV", "FC", "BN"].includes(m.kind);
    let out;
    if (needW && m.weights_missing && m.weights_missing.length) {
      out = { value: NaN, next: [], html: `<p class="muted">The weights of ${esc(m.name)} were too large to embed in the page.</p>` };
    } else if (m.kind === "CONV" || m.kind === "DWCONV") out = explainConv(li, r, c, d);
    else if (m.kind === "DECONV") out = explainDeconv(li, r, c, d);
    else if (m.kind === "POOL") out = explainPool(li, r, c, d, false);
    else if (m.kind === "AVGPOOL") out = explainPool(li, r, c, d, true);
    else if (m.kind === "GAP") out = explainGap(li, d);
    else if (m.kind === "FC") out = explainFc(li, d);
    else if (m.kind === "FLATTEN") out = explainFlatten(li, d);
    else if (m.kind === "ADD") out = explainAdd(li, r, c, d);
    else if (m.kind === "CAT") out = explainCat(li, r, c, d);
    else out = explainElementwise(li, r, c, d);
    out.engine = engine;
    out.kind = m.kind;
    return out;
  }

  // the walk: the units followed from the one clicked, back towards the input
  function trailHtml() {
    if (state.trail.length < 2) return "";
    const steps = state.trail.map((u, k) => {
      const cur = k === state.trail.length - 1;
      return `<button class="crumb${cur ? " current" : ""}" data-step="${k}"${cur ? " disabled" : ""}>` +
        `${esc(unitName(u.li, u.r, u.c, u.d))}</button>`;
    });
    return `<div class="trail" id="cn-trail"><span class="muted">walk back:</span> ${steps.join(' <span class="op">&larr;</span> ')}</div>`;
  }
  function followHtml(out, li) {
    if (li < 0) return "";
    if (!out.next || !out.next.length) return "";
    const btns = out.next.map((u, k) => `<button class="follow-btn" data-next="${k}" data-layer="${u.li}" ` +
      `data-r="${u.r}" data-c="${u.c}" data-d="${u.d}">&#8617; ${esc(unitName(u.li, u.r, u.c, u.d))}` +
      `<span class="why">${u.why}</span></button>`).join("");
    return `<div class="follow" id="cn-follow"><span class="muted">Follow back to the input:</span>${btns}</div>`;
  }

  function explainUnit(li, r, c, d, how) {
    const u = { li, r, c, d };
    if (how === "follow") state.trail.push(u);
    else if (how !== "keep") state.trail = [u];
    state.unit = u;
    clearMarks();
    const out = explain(li, r, c, d);
    if (li >= 0) markUnit(li, r, c, d);
    document.querySelectorAll("svg.arch .arch-col.current").forEach((g) => g.classList.remove("current"));
    const col = document.querySelector(`svg.arch .arch-col[data-layer="${li < 0 ? "input" : li}"]`);
    if (col) col.classList.add("current");
    drawRf(li, r, c);
    const diff = Math.abs(out.value - out.engine);
    const ok = diff <= 1e-5 * Math.max(1, Math.abs(out.engine));
    const box = document.getElementById("cn-unit");
    const spec = li < 0 ? "INPUT" : LAYERS[li].spec;
    box.innerHTML = trailHtml() +
      `<h3 id="cn-unit-title" data-layer="${li}" data-r="${r}" data-c="${c}" data-d="${d}">` +
      `${esc(unitName(li, r, c, d))} <span class="muted">${esc(spec)}</span></h3>` +
      (li >= 0 && placeText(li) ? `<p class="place">in the ${esc(placeText(li))}</p>` : "") + readsHtml(li) + out.html +
      `<div class="result">this page (float64): <b id="cn-unit-value">${full(out.value)}</b><br>` +
      `engine (float32): <b id="cn-unit-engine">${full(out.engine)}</b><br>` +
      `<span class="check ${ok ? "ok" : "bad"}" id="cn-unit-diff">|difference| = ${diff.toExponential(2)}` +
      `${ok ? " \u2714 equal to 1e-5" : " \u2718 larger than 1e-5"}</span></div>` + followHtml(out, li);
    box.querySelectorAll(".follow-btn").forEach((btn) => btn.addEventListener("click", () => {
      const n = out.next[+btn.dataset.next];
      explainUnit(n.li, n.r, n.c, n.d, "follow");
    }));
    box.querySelectorAll(".crumb").forEach((btn) => btn.addEventListener("click", () => {
      state.trail = state.trail.slice(0, +btn.dataset.step + 1);
      const t = state.trail[state.trail.length - 1];
      explainUnit(t.li, t.r, t.c, t.d, "keep");
    }));
  }
  // ------------------------------------------------------------------------------ flattening
  function buildFlatten() {
    const root = document.getElementById("cn-flatten");
    const fl = DATA.flatten;
    if (!fl) {
      root.innerHTML = '<p class="muted">No layer of this network turns a volume into a vector ' +
        "(no FC or FLATTEN after a volume).</p>";
      return;
    }
    const [H, W, D] = fl.shape;
    const from = srcOf(fl.layer);
    const srcName = from < 0 ? "the input" : LAYERS[from].name;
    const n = fl.n;
    let rows = "";
    const shown = Math.min(n, Math.max(D + 4, 8), 20);
    for (let i = 0; i < shown; i++) rows += `<tr><td>${i}</td><td>${volumePos(fl.shape, i)}</td><td class="v" data-i="${i}"></td></tr>`;
    root.innerHTML = `<p>${esc(fl.name)} (${esc(fl.kind)}) reads the ${H}x${W}x${D} output of ${esc(srcName)} as a vector of ` +
      `<b>${n}</b> = ${H}&middot;${W}&middot;${D} features, in the order the model uses (NHWC, row-major): ` +
      `<code>index = (row&middot;${W} + col)&middot;${D} + depth</code>. Row by row, left to right, and at each ` +
      `position all ${D} depth values before moving on: features 0..${D - 1} are the depth column of the top-left ` +
      `unit.</p><div class="flat-strip" id="cn-flat-strip"></div>` +
      `<p class="muted">The whole vector, coloured like ${esc(srcName)}'s maps; click a feature to see the unit it comes from.</p>` +
      `<table class="flatmap"><tr><th>feature</th><th>(row, col, depth)</th><th>value</th></tr>${rows}</table>`;
    const cv = makeCanvas(n, 1);
    cv.id = "cn-flat-canvas";
    cv.addEventListener("click", (ev) => {
      const i = Math.min(n - 1, Math.max(0, Math.floor(ev.offsetX / cv.clientWidth * n)));
      if (from < 0) return;
      const d = i % D, p = (i - d) / D, c = p % W, r = (p - c) / W;
      explainUnit(from, r, c, d);
    });
    document.getElementById("cn-flat-strip").appendChild(cv);
  }
  function paintFlatten() {
    const fl = DATA.flatten;
    if (!fl) return;
    const x = act(state.sample, srcOf(fl.layer));
    paintVector(document.getElementById("cn-flat-canvas"), x, scaleFor(x));
    document.querySelectorAll("#cn-flatten td.v").forEach((td) => { td.textContent = f3(x[+td.dataset.i]); });
  }

  // ------------------------------------------------------------------------------ selection
  function select(s) {
    state.sample = s;
    document.querySelectorAll(".thumb").forEach((t) => t.classList.toggle("selected", +t.dataset.sample === s));
    paintInput();
    paintProbs();
    paintLayers();
    paintFlatten();
    if (state.unit) {
      const u = state.unit;
      explainUnit(u.li, u.r, u.c, u.d, "keep");   // the same unit (and walk) for the new image
    }
  }

  function init() {
    buildGalleries();
    buildLayers();
    buildFlatten();
    setupInput();
    document.querySelectorAll("svg.arch .arch-col").forEach((g) => {
      g.addEventListener("click", () => {
        const id = g.dataset.layer === "input" ? "input" : "layer-" + g.dataset.layer;
        const el = document.getElementById(id);
        if (el) el.scrollIntoView({ behavior: "smooth", block: "start" });
      });
    });
    select(0);
    document.body.dataset.ready = "1";
  }

  // a small API for tests and for the curious (in the browser console)
  window.convnetViz = {
    data: DATA,
    select,
    explain: (li, r, c, d) => { const o = explain(li, r, c, d); return { value: o.value, engine: o.engine, kind: o.kind }; },
    click: explainUnit,
    // the explanation's walk back: the units the current one reads (what the follow buttons do)
    next: (li, r, c, d) => explain(li, r, c, d).next.map((u) => ({ li: u.li, r: u.r, c: u.c, d: u.d })),
    state,
  };
  init();
})();
